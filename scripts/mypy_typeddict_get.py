"""A mypy plugin: `.get` on a TypedDict with a key it does not name is an error.

mypy accepts any key in `.get` (a value of a TypedDict may hold more keys than it names),
so a misspelled key, `melt_data(op).get("swap_snet")`, would pass as one that is absent.
Every TypedDict here is the record of what this code stores (a saga's Operation.data): a
key it does not name is a typo. pyproject.toml [tool.mypy] loads this.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.plugin import MethodContext, Plugin
from mypy.plugins.default import typed_dict_get_callback
from mypy.typeops import try_getting_str_literals
from mypy.types import Type, TypedDictType


def _checked_get(ctx: MethodContext) -> Type:
    if isinstance(ctx.type, TypedDictType) and ctx.args and len(ctx.args[0]) == 1:
        keys = try_getting_str_literals(ctx.args[0][0], ctx.arg_types[0][0]) or []
        for key in keys:
            if key not in ctx.type.items:
                ctx.api.msg.typeddict_key_not_found(ctx.type, key, ctx.context)
    return typed_dict_get_callback(ctx)  # mypy's own: the value type of the key


class TypedDictGetPlugin(Plugin):
    def get_method_hook(self, fullname: str) -> Callable[[MethodContext], Type] | None:
        return _checked_get if fullname == "typing.Mapping.get" else None


def plugin(version: str) -> type[Plugin]:
    return TypedDictGetPlugin
