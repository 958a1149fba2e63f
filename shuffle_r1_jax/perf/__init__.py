"""Performance tooling over the trainer's own programs: the compile-time memory planner (`memory_plan`), the
training-step benchmark (`step_benchmark`), the sampler benchmark (`sampler_benchmark`), the compilation monitor
(`compiles`), peak FLOP/s (`peak`), a random-weight checkpoint of Qwen2.5-VL-3B dimensions (`random_checkpoint`)
and the BUILD_NOTES.md section writer (`notes`)."""
