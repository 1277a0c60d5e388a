"""Small, family-agnostic rewrites of ONNX graphs that the quantizers need.

- `gemm_heads_to_matmul`: Gemm(transB=1) over a constant weight (how both families export the output
  head) becomes MatMul over a transposed copy, which ONNX Runtime's
  weight-only and static quantizers understand (they only take MatMul);
- `producer_of`: the MatMul/Gemm that computes a graph output (the output head of `logits`);
- `matching_nodes`: node names selected by name patterns (re.search);
- `split_channels`: a MatMul whose input has outliers in a few channels becomes a float MatMul over
  those channels plus one over the rest (which a per-tensor int8 scale then holds), computed apart
  from the MatMuls that produce them where the nodes between work channel by channel (fc1, GELU);
- `infer_shapes_keeping_weights`: shape inference that never copies the weights.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

from . import require

WEIGHT_OPS = ("MatMul", "Gemm")


def initializers(model: Any) -> dict[str, Any]:
    return {i.name: i for i in model.graph.initializer}


def matching_nodes(model: Any, patterns: Iterable[str], op_types: Iterable[str] | None = None) -> list[str]:
    """Names of the nodes (of `op_types`, if given) whose name matches any pattern."""
    patterns, ops = list(patterns), set(op_types) if op_types else None
    return [n.name for n in model.graph.node
            if (ops is None or n.op_type in ops) and any(re.search(p, n.name) for p in patterns)]


def weight_nodes(model: Any) -> list[str]:
    """MatMul/Gemm nodes whose second input is a constant weight (what weight quantization touches)."""
    inits = initializers(model)
    return [n.name for n in model.graph.node if n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in inits]


def split_channels(model: Any, node_name: str, channels: Any) -> str:
    """Rewrite MatMul `node_name` (X @ W, W constant, X [..., K]) as X[..., c] @ W[c] + X[..., r] @ W[r]
    for the input channels `c` and the rest `r`, so that a quantizer given the second MatMul (the
    node keeps its name) sees X without channels c. The first MatMul is named `node_name +
    "/channels"`; leave it float. Returns that name.

    When X is computed channel by channel from the outputs of MatMuls over constant weights (fc1,
    its bias and GELU before fc2), those MatMuls and the elementwise nodes after them are split the
    same way, so channels c and r are computed apart from the start (`_carve`). Otherwise channels c
    are gathered from X and masked out of it (the second MatMul then reads X with channels c zeroed
    and W with rows c zeroed)."""
    require("onnx")
    import numpy as np
    from onnx import helper, numpy_helper

    node = next(n for n in model.graph.node if n.name == node_name)
    if node.op_type != "MatMul":
        raise ValueError(f"{node_name}: a MatMul is needed, not {node.op_type}")
    inits = initializers(model)
    weight = numpy_helper.to_array(inits[node.input[1]])
    channels = np.asarray(sorted(set(int(c) for c in channels)), dtype=np.int64)
    rest = np.setdiff1d(np.arange(weight.shape[0]), channels)
    base = node_name + "/channels"
    x, y = node.input[0], node.output[0]
    carved = _carve(model, node, channels, rest)
    if carved:
        new = {base + "/weight": weight[channels], node_name + "/rest_weight": weight[rest]}
        nodes = [helper.make_node("MatMul", [carved, base + "/weight"], [base + "/y"], name=base),
                 helper.make_node("MatMul", [x, node_name + "/rest_weight"], [node_name + "/y"], name=node_name)]
    else:
        zeroed = weight.copy()
        zeroed[channels] = 0
        mask = np.ones(weight.shape[0], dtype=weight.dtype)
        mask[channels] = 0
        new = {base + "/index": channels, base + "/weight": weight[channels], node_name + "/mask": mask,
               node_name + "/rest_weight": zeroed}
        nodes = [helper.make_node("Gather", [x, base + "/index"], [base + "/x"], name=base + "/gather", axis=-1),
                 helper.make_node("MatMul", [base + "/x", base + "/weight"], [base + "/y"], name=base),
                 helper.make_node("Mul", [x, node_name + "/mask"], [node_name + "/x"], name=node_name + "/mask"),
                 helper.make_node("MatMul", [node_name + "/x", node_name + "/rest_weight"], [node_name + "/y"],
                                  name=node_name)]
    nodes.append(helper.make_node("Add", [node_name + "/y", base + "/y"], [y], name=node_name + "/add"))
    model.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in new.items())
    _replace_node(model, node, nodes)
    return base


ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sigmoid", "Relu", "Neg", "Sqrt", "Exp", "Abs"}


def _carve(model: Any, target: Any, channels: Any, rest: Any) -> str | None:
    """Split the computation of `target`'s input X [..., N] into channels `channels` and `rest`,
    when X is computed elementwise (ELEMENTWISE nodes whose constants are scalars or [N] vectors)
    from MatMuls over constant [K, N] weights, none of it read by anything else: each of those
    nodes is cloned over the channels (names + "/channels"), and the originals keep the rest.
    Returns the name of the clone of X, or None (the graph is left as it was) when X is not so."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = initializers(model)
    by_output = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    width = len(channels) + len(rest)   # X's channels, the rows of target's weight
    constant_outputs = {o for n in graph.node if n.op_type == "Constant" for o in n.output}

    def constant(name: str) -> Any:
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in constant_outputs:
            node = by_output[name]
            return numpy_helper.to_array(next(a.t for a in node.attribute if a.name == "value"))
        return None

    order: list = []       # chain nodes, each after the nodes it reads
    sources: list = []     # the MatMuls the chain starts from
    seen: set[str] = set()

    def visit(tensor: str) -> bool:
        node = by_output.get(tensor)
        if node is None:
            return False
        if node.name in seen:
            return True
        seen.add(node.name)
        if node.op_type == "MatMul":
            w = constant(node.input[1]) if node.input[1] in inits else None
            if w is None or w.ndim != 2 or w.shape[1] != width:
                return False
            sources.append(node)
            return True
        if node.op_type not in ELEMENTWISE:
            return False
        for name in node.input:
            c = constant(name)
            if c is None:
                if not visit(name):
                    return False
            elif c.size != 1 and c.shape != (width,):
                return False
        order.append(node)
        return True

    if not visit(target.input[0]) or not sources:
        return None
    inside = {n.name for n in order + sources} | {target.name}
    produced = [o for n in order + sources for o in n.output]
    outputs = {g.name for g in graph.output}
    if any(o in outputs or any(r.name not in inside for r in readers.get(o, [])) for o in produced):
        return None   # a value on the way is read elsewhere: it must keep all its channels

    names = {n.name for n in graph.node}
    if any(n.name + "/channels" in names for n in order + sources):
        return None   # split before: its copies would share names
    twin = {o: o + "/channels" for o in produced}
    added = []
    for node in sources + order:
        inputs_c, inputs_r = [], []
        for k, name in enumerate(node.input):
            if name in twin:
                inputs_c.append(twin[name])
                inputs_r.append(name)
                continue
            c = constant(name)
            if c is None or c.size == 1:             # the source's input, or a scalar: shared
                inputs_c.append(name)
                inputs_r.append(name)
                continue
            axis = 1 if node.op_type == "MatMul" else 0   # a weight's columns, a vector's entries
            for suffix, keep, into in (("/channels", channels, inputs_c), ("/rest", rest, inputs_r)):
                piece = np.ascontiguousarray(np.take(c, keep, axis=axis))
                added.append(numpy_helper.from_array(piece, f"{node.name}/in{k}{suffix}"))
                into.append(added[-1].name)
        clone = helper.make_node(node.op_type, inputs_c, [twin[o] for o in node.output], name=node.name + "/channels")
        clone.attribute.extend(node.attribute)
        replacement = helper.make_node(node.op_type, inputs_r, list(node.output), name=node.name)
        replacement.attribute.extend(node.attribute)
        _replace_node(model, node, [replacement, clone])
    graph.initializer.extend(added)
    stale = set(produced)
    kept = [v for v in graph.value_info if v.name not in stale]   # their last dimension changed
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return twin[target.input[0]]


def _replace_node(model: Any, node: Any, nodes: list) -> None:
    """Put `nodes` where `node` was, and drop the initializers that nothing reads any more."""
    graph = model.graph
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for i, n in enumerate(nodes):
        graph.node.insert(at + i, n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name in set(node.input) and i.name not in read]:
        graph.initializer.remove(init)


def producer_of(model: Any, output: str) -> str | None:
    """The nearest MatMul/Gemm with a constant weight upstream of graph output `output`, through
    shape-only nodes (Reshape, Transpose, Cast...); None when the graph has no such output."""
    by_output = {o: n for n in model.graph.node for o in n.output}
    weighted = set(weight_nodes(model))
    frontier, seen = [output], set()
    while frontier:
        name = frontier.pop(0)
        node = by_output.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.name in weighted:
            return node.name
        frontier.extend(node.input[:1])  # follow the data input only
    return None


def gemm_heads_to_matmul(model: Any) -> dict[str, str]:
    """Rewrite every Gemm(transA=0, transB=1, alpha=1) over a constant weight as MatMul over a
    transposed copy of the weight, plus Add when the bias is not all zero. The original weight stays
    when something else (the embedding Gather) reads it. Returns {old Gemm name: new MatMul name}."""
    require("onnx")
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = initializers(model)
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    renamed: dict[str, str] = {}
    for node in list(graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or node.input[1] not in inits or attrs.get("transA", 0)
                or not attrs.get("transB", 0) or attrs.get("alpha", 1.0) != 1.0):
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        bias = (numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits
                else None)
        if len(node.input) > 2 and node.input[2] and bias is None:
            continue  # a computed bias: leave the Gemm alone
        name = node.name + "_matmul"
        transposed = numpy_helper.from_array(np.ascontiguousarray(weight.T), node.input[1] + "_transposed")
        graph.initializer.append(transposed)
        out = node.output[0]
        new = [helper.make_node("MatMul", [node.input[0], transposed.name], [out], name=name)]
        if bias is not None and np.any(bias * attrs.get("beta", 1.0)):
            scaled = numpy_helper.from_array((bias * attrs.get("beta", 1.0)).astype(bias.dtype), node.input[2] + "_add")
            graph.initializer.append(scaled)
            new = [helper.make_node("MatMul", [node.input[0], transposed.name], [out + "_nobias"], name=name),
                   helper.make_node("Add", [out + "_nobias", scaled.name], [out], name=node.name + "_bias")]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, n in enumerate(new):
            graph.node.insert(position + offset, n)
        for used in filter(None, node.input[1:]):
            readers[used] -= 1
            if readers[used] == 0 and used in inits:
                graph.initializer.remove(inits.pop(used))
        renamed[node.name] = name
    return renamed


def infer_shapes_keeping_weights(model: Any) -> Any:
    """`model` with its value_info from ONNX shape inference, run on a copy whose large
    initializers are graph inputs of the same type and shape: the weights are neither copied
    nor written out (shapes do not depend on them; small constants such as Reshape targets stay)."""
    onnx = require("onnx")
    helper = onnx.helper
    graph = model.graph
    skeleton = helper.make_model(
        helper.make_graph(list(graph.node), graph.name, list(graph.input), list(graph.output),
                          value_info=list(graph.value_info)),
        ir_version=model.ir_version, opset_imports=list(model.opset_import))
    inputs = {i.name for i in graph.input}
    for tensor in graph.initializer:
        if math.prod(tensor.dims) < 1024:
            skeleton.graph.initializer.append(tensor)
        elif tensor.name not in inputs:   # (older graphs list initializers among the inputs too)
            skeleton.graph.input.append(helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
    inferred = onnx.shape_inference.infer_shapes(skeleton)
    del graph.value_info[:]
    graph.value_info.extend(inferred.graph.value_info)
    return model
