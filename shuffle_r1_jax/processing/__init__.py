"""Host-side input processing: image decode and Qwen2.5-VL patchify, tokenizers."""
