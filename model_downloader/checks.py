"""Can this project slice that model? Checks on a config, a repo's file list, and a local folder.

Each check returns a list of problems (empty: fine), so callers can show them all at once.
They need neither torch nor the network.

Sliceable families are the table of common/model_family.py (Llama: TinyLlama, Llama 2/3.x; Qwen3
dense): the workers rebuild their decoder layers from `model.layers.N.*` tensors. Families that look
close but are not (Mistral's sliding window, Qwen2's q/k/v biases, Gemma's scaled embeddings and norm
offsets, Phi-3's fused projections) would compute something else or load with missing or unexpected
tensors, so they are refused up front, with what is missing, as the root and the workers refuse them.
"""

import json
from pathlib import Path

from common.model_family import family_problems

from .presets import preset_from_config, weight_shapes
from .safetensors_stream import tensor_shapes

REQUIRED_SIZES = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
INDEX_FILE = "model.safetensors.index.json"
SINGLE_WEIGHTS_FILE = "model.safetensors"
MAX_LISTED = 5  # name a few missing tensors, not hundreds


def check_sliceable(config: dict) -> list[str]:
    """Problems that stop us slicing a model with this config.json; [] when it is a decoder-only model of a
    supported family."""
    problems = []
    model_type = config.get("model_type")
    if config.get("is_encoder_decoder"):
        problems.append(f"model_type {model_type!r} is encoder-decoder; only decoder-only models can be sliced")
    problems += family_problems(config)
    architectures = config.get("architectures") or []
    if not any(name.endswith("ForCausalLM") for name in architectures):
        problems.append(f"architectures {architectures} has no ...ForCausalLM (a text-generation head is needed)")
    for field in REQUIRED_SIZES:
        value = config.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            problems.append(f"config field {field} must be a positive integer, got {value!r}")
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "unknown")
        problems.append(f"quantized checkpoints ({method}) are not supported; use the unquantized weights")
    return problems


def check_repo_files(filenames: list[str]) -> list[str]:
    """Problems with a Hub repo's file listing: we load safetensors only, from the top level."""
    top_level = [name for name in filenames if "/" not in name]
    problems = []
    if "config.json" not in top_level:
        problems.append("the repo has no config.json")
    if not any(name.endswith(".safetensors") for name in top_level):
        other = [name for name in top_level if name.endswith((".bin", ".pth", ".pt", ".gguf", ".h5"))]
        found = f" (it has {', '.join(other[:MAX_LISTED])})" if other else ""
        problems.append(f"the repo has no .safetensors weights{found}; this project loads safetensors only")
    if not any(name in top_level for name in TOKENIZER_FILES):
        problems.append(f"the repo has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return problems


def weight_files(folder: Path) -> tuple[list[str], list[str]]:
    """(weight file names, problems): the files the index names, or the single model.safetensors."""
    index_path = folder / INDEX_FILE
    if index_path.is_file():
        try:
            names = sorted(set(json.loads(index_path.read_text())["weight_map"].values()))
        except (ValueError, KeyError, AttributeError) as error:
            return [], [f"{INDEX_FILE} is not a valid index: {error}"]
        missing = [name for name in names if not (folder / name).is_file()]
        return names, [f"weight file {name} named in {INDEX_FILE} is missing" for name in missing]
    if (folder / SINGLE_WEIGHTS_FILE).is_file():
        return [SINGLE_WEIGHTS_FILE], []
    return [], [f"no {SINGLE_WEIGHTS_FILE} or {INDEX_FILE} in {folder}"]


def check_tensors(folder: Path, config: dict, file_names: list[str]) -> list[str]:
    """Every tensor the config implies is in the files with the right shape (reads headers only)."""
    found: dict[str, tuple[int, ...]] = {}
    for file_name in file_names:
        try:
            found.update(tensor_shapes(folder / file_name))
        except (OSError, ValueError) as error:
            return [f"cannot read {file_name}: {error}"]
    problems = []
    expected = weight_shapes(preset_from_config(config))
    missing = [name for name in expected if name not in found]
    if missing:
        shown = ", ".join(missing[:MAX_LISTED]) + (" ..." if len(missing) > MAX_LISTED else "")
        problems.append(f"{len(missing)} tensors missing from the weight files: {shown}")
    for name, shape in expected.items():
        if name in found and found[name] != shape:
            problems.append(f"tensor {name} has shape {list(found[name])}, config implies {list(shape)}")
    return problems


def check_model_folder(path: str | Path) -> list[str]:
    """Problems with a local model folder: config, sliceability, weight files and tensors, tokenizer."""
    folder = Path(path)
    if not folder.is_dir():
        return [f"{folder} is not a folder"]
    try:
        config = json.loads((folder / "config.json").read_text())
    except FileNotFoundError:
        return [f"{folder} has no config.json"]
    except (OSError, ValueError) as error:
        return [f"{folder / 'config.json'} cannot be read: {error}"]
    problems = check_sliceable(config)
    file_names, weight_problems = weight_files(folder)
    problems += weight_problems
    if not problems:
        problems += check_tensors(folder, config, file_names)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"{folder} has no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    return problems
