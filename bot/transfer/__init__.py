"""Moving history in and out: whole-database export and import, copy between databases, the old page's tables."""
