"""The only package that speaks SQL: migrations, named queries, and the operations on them."""
