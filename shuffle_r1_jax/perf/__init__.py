"""Performance tooling over the trainer's own programs: the compile-time memory planner (`memory_plan`), the
training-step benchmark (`step_benchmark`), the compilation monitor (`compiles`), peak FLOP/s (`peak`) and the
BUILD_NOTES.md section writer (`notes`)."""
