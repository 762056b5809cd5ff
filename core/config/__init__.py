"""Recipes and the registry: reading and validating recipes (`recipe`), loading plugins into one registry
per component kind (`registry`), and building the component a recipe section names (`build`)."""
