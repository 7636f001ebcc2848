"""Performance benchmarks (scripts; see bench/README.md). Not part of the installed library."""
