"""cocotb testbenches and the simulator runner that builds and caches them."""
