"""Core ATen ops: numpy semantics of the overloads ``torch.export(...).run_decompositions()`` emits.

A node's op is the ATen overload name without ``aten.`` (``convolution.default``,
``sum.dim_IntList``) and its args are every argument of that overload's schema, in
schema order, keyword-only ones included, defaults filled in
(``edgecompress.graph.aten.schema_args``). Tensors arrive as numpy arrays (weights may
arrive as ``Param``), dtypes as names ("float32"), device / layout / memory format as
None, int lists as lists, scalars as python numbers. torch's op is the reference: results
have torch's shapes and dtypes (type promotion included: an int64 tensor plus a python
float is float32, a float32 tensor with a python float stays float32, comparisons give
bool, index outputs are int64) and 0-d results are 0-d arrays, not numpy scalars.

Values in a graph are never written in place, so clone / alias / same-dtype casts return
their input and views (expand, permute, slice, ...) stay views (expand's is read-only).
tests/test_op_conformance.py checks every op here against torch. One module per kind:
_args (argument helpers), factories, elementwise (binary), unary, reductions, nn (matmul, normalisation,
convolution, pooling), shapes (views), indexing (index, gather/scatter, sort).
"""
# importing each module registers its ops into ops.OPS
from . import elementwise, factories, indexing, nn, reductions, shapes, unary  # noqa: F401
from ._args import UnsupportedArgument  # noqa: F401  (raised for argument values not implemented)
