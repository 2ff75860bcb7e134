"""docbatch flows: compositions of tasks and blocks."""
