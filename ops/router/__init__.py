"""Router tooling: labelled datasets, k-fold training and evaluation, metrics and plots."""
