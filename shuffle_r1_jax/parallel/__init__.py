"""Device mesh and sharding: logical-axis rules and parameter shardings (`sharding`), the mesh built from the
config section `mesh` (`mesh_config`), multi-host start-up (`distributed`), and host-local rows <-> global
arrays plus small cross-process reductions (`global_arrays`)."""
