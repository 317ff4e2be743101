"""The only package that knows SQL: schema, the single writer, queries."""
