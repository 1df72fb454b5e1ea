"""What-if replay: a request trace through the real pipeline once per lever configuration."""
