"""Host-side input processing: image decoding (`image_io`) and Qwen2.5-VL resize and patchify (`image`), prompt
formats, the chat template of the checkpoint's tokenizer and image-token expansion (`prompts`), left-padded
bucketed prompt batches (`batch`). The demo's tiny tokenizer is `shuffle_r1_jax.demo.tiny_tokenizer`."""
