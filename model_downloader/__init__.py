"""Models for the cluster: synthetic random-weight Llamas in real shapes, or real ones from the Hub.

Entry points (import the submodule you need; synthetic imports torch, fetch huggingface_hub):
- presets: PRESETS, get_preset, preset_config, weight_shapes, param_count, layer_param_count, weight_bytes
- synthetic: make_synthetic_model, ensure_synthetic_model, is_complete
- fetch: fetch_model, FetchError
- checks: check_sliceable, check_model_folder
- command line: python -m model_downloader --help
"""
