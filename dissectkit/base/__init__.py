"""The foundation every layer stands on: errors, plain data types, the build context, parameter
models and weights references. Imports nothing else from dissectkit."""
