"""Speed benchmarks of the kit's stages (verb: bench) and the reference-style training step they
are compared with. Tooling, not part of the method: nothing in ``sfc_core`` imports it except
the CLI's verb table."""
