"""Complexity routing: routers score a request, a per-feature policy turns the score into a tier."""
