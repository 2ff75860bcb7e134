"""docbatch tasks: units of work that use blocks and know nothing of the flows calling them."""
