"""Download a real model from the Hugging Face Hub, after checking that this project can slice it.

Order: list the repo's files and fetch config.json alone (kilobytes), check both, and only then
download the weights (gigabytes). huggingface_hub shows its own progress bars and resumes an
interrupted download when run again with the same --out.

Gated repos (all meta-llama/*, e.g. meta-llama/Llama-3.2-1B and -3B) need a token of an account that
accepted the license on the model's page: pass `token` or set HF_TOKEN. TinyLlama needs neither.
"""

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import hf_hub_download, list_repo_files, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HTTPError,  # the HTTP library's base error: httpx's in huggingface_hub 1.x, httpx2's in 2.x
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .checks import check_model_folder, check_repo_files, check_sliceable

# Weights, configs, tokenizer and chat template files of the top level only: subfolders such as
# original/ (Meta's own .pth copy of the weights) would double the download.
ALLOW_PATTERNS = ["*.safetensors", "*.json", "tokenizer.model", "*.jinja"]
IGNORE_PATTERNS = ["*/*"]


class FetchError(Exception):
    """A download that cannot go ahead; the message says what to do about it."""


def hub_error_message(error: Exception, repo_id: str, revision: str | None, has_token: bool) -> str | None:
    """A user-facing explanation of a huggingface_hub/network error, or None if it is not one we know."""
    page = f"https://huggingface.co/{repo_id}"
    if isinstance(error, GatedRepoError):  # before RepositoryNotFoundError: it is a subclass
        if has_token:
            return f"{repo_id} is gated and this token has no access yet: accept the license at {page}, then retry"
        return f"{repo_id} is gated: accept the license at {page}, then set HF_TOKEN to a token of that account"
    if isinstance(error, RevisionNotFoundError):
        return f"revision {revision!r} not found in {repo_id}"
    if isinstance(error, RepositoryNotFoundError):
        hint = "" if has_token else " (if it is private or gated, set HF_TOKEN)"
        return f"repo {repo_id} not found on the Hub{hint}"
    if isinstance(error, HfHubHTTPError):
        status = error.response.status_code if error.response is not None else "?"
        if status == 401:
            return "the Hub rejected the token (HTTP 401): check HF_TOKEN"
        return f"the Hub answered HTTP {status} for {repo_id}: {error}"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, HTTPError)):
        # Connection refused, DNS failure, timeout: no HTTP status came back.
        return f"cannot reach huggingface.co (no network, a proxy, or HF_HUB_OFFLINE=1?): {error}"
    return None


@contextmanager
def explained_hub_errors(repo_id: str, revision: str | None, has_token: bool) -> Iterator[None]:
    """Turns the hub and network errors we can explain into FetchError; others pass through."""
    try:
        yield
    except (HTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        message = hub_error_message(error, repo_id, revision, has_token)
        if message is None:
            raise
        raise FetchError(message) from error


def fetch_config(repo_id: str, revision: str | None, token: str | None) -> dict:
    """config.json alone, into a throwaway folder, so a refused model leaves nothing behind."""
    with tempfile.TemporaryDirectory() as scratch:
        path = hf_hub_download(repo_id, "config.json", revision=revision, token=token, local_dir=scratch)
        return json.loads(Path(path).read_text())


def fetch_model(
    repo_id: str, out_dir: str | os.PathLike, token: str | None = None, revision: str | None = None
) -> Path:
    """Downloads `repo_id` into `out_dir` (HF layout) and returns the folder; FetchError if we can't."""
    token = token or os.environ.get("HF_TOKEN") or None
    out_path = Path(out_dir)
    with explained_hub_errors(repo_id, revision, has_token=token is not None):
        files = list_repo_files(repo_id, revision=revision, token=token)
        problems = check_repo_files(files)
        if "config.json" in files:
            problems = check_sliceable(fetch_config(repo_id, revision, token)) + problems
        if problems:
            raise FetchError(f"{repo_id} cannot be used: " + "; ".join(problems))
        snapshot_download(
            repo_id,
            revision=revision,
            token=token,
            local_dir=out_path,
            allow_patterns=ALLOW_PATTERNS,
            ignore_patterns=IGNORE_PATTERNS,
        )
    problems = check_model_folder(out_path)
    if problems:
        raise FetchError(f"downloaded {repo_id} into {out_path}, but: " + "; ".join(problems))
    return out_path
