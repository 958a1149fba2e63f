"""Host-side input processing: image decode and Qwen2.5-VL patchify, tokenizers, prompt formats and the chat
template (`prompts`), left-padded bucketed prompt batches (`batch`)."""
