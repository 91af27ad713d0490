"""PARALLELISM=tensor through compose on the real engine: 2 workers on the tiny synthetic model, one bring-up
per dtype; a streamed greedy reply equals Hugging Face generate, /api/cluster shows each worker's share."""
import json

import pytest
import requests

from .conftest import ARTIFACTS, ComposeCluster
from .sse import read_sse

pytestmark = pytest.mark.docker

# The prompt and length of tests/test_tensor_cluster.py. bfloat16 in tensor mode is not bit for bit Hugging Face's:
# each worker's partial is rounded to bfloat16 before the float32 sum, where HF rounds the whole product once,
# so a greedy reply can part from HF's after enough tokens (test_docker.py's prompt does at its 12th token).
PROMPT = "The quick brown fox jumps over the lazy dog"
N_TOKENS = 16
LAYERS = 4  # the tiny preset: 4 layers, 4 query heads, 2 key/value heads, intermediate width 176


@pytest.fixture(scope="module", params=[("float32", "star"), ("bfloat16", "star"), ("float32", "mesh")],
                ids=lambda p: "-".join(p))
def tensor_cluster(request):
    """Root + 2 tensor-parallel workers through compose (project ddllm-test, port 3001), one dtype and sync
    topology per bring-up (mesh: the workers trade their partials over the compose network, not via the root).

    The image is the one test_docker.py's compose_cluster builds; built here too when this module runs alone."""
    dtype, topology = request.param
    cluster = ComposeCluster("ddllm-test", {"NODES": "2", "MODEL_PRESET": "tiny", "WORKER_CPUS": "1",
                                            "WORKER_MEMORY": "2g", "LATENCY_MIN_MS": "1", "LATENCY_MAX_MS": "2",
                                            "HOP_TIMEOUT_S": "5", "PARALLELISM": "tensor", "DTYPE": dtype,
                                            "SYNC_TOPOLOGY": topology})
    cluster.compose("down", "-v", "--remove-orphans", check=False)
    cluster.compose("build")
    cluster.compose("up", "-d")
    try:
        cluster.wait_healthy(600)
        yield cluster, dtype, topology
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"compose-tensor-{dtype}-{topology}.log").write_text(cluster.compose("logs", "--no-color", check=False).stdout)
        cluster.compose("down", "-v", "--remove-orphans", check=False)


def hf_greedy_in_container(cluster, dtype: str) -> list[int]:
    """The oracle: the prompt's ids and HF generate in this dtype, on the very files the cluster serves, in the root."""
    code = ("import json,sys,torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
            "p=json.loads(sys.argv[1]); ids=AutoTokenizer.from_pretrained(p['path'])(p['prompt']).input_ids; "
            "m=AutoModelForCausalLM.from_pretrained(p['path'], dtype=getattr(torch, p['dtype'])); "
            "o=m.generate(torch.tensor([ids]), max_new_tokens=p['n'], do_sample=False); "
            "print(json.dumps(o[0, len(ids):].tolist()))")
    path = requests.get(cluster.url + "/api/cluster").json()["model"]["path"]
    arg = json.dumps({"path": path, "prompt": PROMPT, "n": N_TOKENS, "dtype": dtype})
    return json.loads(cluster.compose("exec", "-T", "root", "python3", "-c", code, arg).stdout.strip().splitlines()[-1])


def test_streamed_greedy_reply_equals_hf_generate_in_tensor_mode(tensor_cluster):
    cluster, dtype, _ = tensor_cluster
    r = requests.post(cluster.url + "/api/generate", json={"prompt": PROMPT, "max_tokens": N_TOKENS}, stream=True,
                      timeout=120)
    events = read_sse(r.iter_lines(decode_unicode=True))
    assert r.status_code == 200 and events[0][0] == "start" and events[-1][0] == "done", events[-1]
    tokens = [d["id"] for e, d in events if e == "token"]
    assert tokens == events[-1][1]["token_ids"]
    assert tokens == hf_greedy_in_container(cluster, dtype)
    m = events[-1][1]["metrics"]
    assert m["parallelism"] == "tensor" and m["completion_tokens"] == len(tokens) > 1
    assert m["syncs"] == 2 * LAYERS * len(tokens)  # one step per token (the prefill gives the first)
    assert [s["name"] for s in m["stages"]] == ["worker-1", "worker-2"]


def test_the_cluster_says_tensor_and_shows_each_workers_share(tensor_cluster):
    cluster, dtype, topology = tensor_cluster
    info = requests.get(cluster.url + "/api/cluster").json()
    assert info["parallelism"] == "tensor" and info["model"]["synthetic"] is True and info["model"]["dtype"] == dtype
    assert info["sync_topology"] == topology
    workers = info["workers"]
    assert [w["name"] for w in workers] == ["worker-1", "worker-2"]
    assert all(w["layers"] == [0, LAYERS] for w in workers)  # every worker holds a share of every layer
    shares = [w["share"] for w in workers]
    assert [s["q_heads"] for s in shares] == [[0, 2], [2, 4]]
    assert [s["kv_heads"] for s in shares] == [[0, 1], [1, 2]]
    assert [s["ffn"] for s in shares] == [[0, 88], [88, 176]]
    assert [s["label"] for s in shares] == ["q 0-1 kv 0 ffn 0-87", "q 2-3 kv 1 ffn 88-175"]
    assert [(s["rank"], s["world"]) for s in shares] == [(0, 2), (1, 2)]
