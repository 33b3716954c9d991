"""Signal-propagation theory of Kedia et al. 2024 (arXiv:2403.09635): component moments and the DSLM recipe."""
