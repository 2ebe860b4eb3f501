"""Fake of ComfyUI's V3 node schema, `comfy_api.v0_0_2.io` (0.3.64: comfy_api/latest/_io.py), limited to what the
pack's nodes use: the Schema, ComfyNode, NodeOutput, the Hidden values, and the input/output kinds below.

What a node class looks like to ComfyUI is reproduced exactly, because CI checks the pack against it:
`GET_NODE_INFO_V1()` is the node's /object_info entry (Schema.get_v1_info), `INPUT_TYPES()` what the executor
reads, `PREPARE_CLASS_CLONE(hidden)` the locked class clone `execute` runs on (execution.py), and the
`validate_inputs` / `fingerprint_inputs` placeholders that ComfyUI skips unless a node overrides them
(`first_real_override`). The real/fake agreement is checked against a real ComfyUI in tests/integration.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# --- inputs and outputs -------------------------------------------------------------------------------------------

class Input:
    io_type: Any = None

    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, extra_dict=None):
        self.id, self.display_name, self.optional, self.tooltip, self.lazy = id, display_name, optional, tooltip, lazy
        self.extra_dict = extra_dict if extra_dict is not None else {}

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                           "lazy": self.lazy}) | prune_dict(self.extra_dict)

    def get_io_type(self):
        return self.io_type


class WidgetInput(Input):
    def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                 socketless=None, widget_type=None, force_input=None, extra_dict=None):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default, self.socketless = default, socketless
        self.widget_type, self.force_input = widget_type, force_input

    def as_dict(self):
        return super().as_dict() | prune_dict({"default": self.default, "socketless": self.socketless,
                                               "widgetType": self.widget_type, "forceInput": self.force_input})

    def get_io_type(self):
        return self.widget_type if self.widget_type is not None else super().get_io_type()


class Output:
    io_type: Any = None

    def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
        self.id, self.display_name, self.tooltip, self.is_output_list = id, display_name, tooltip, is_output_list

    def as_dict(self):
        return prune_dict({"display_name": self.display_name, "tooltip": self.tooltip,
                           "is_output_list": self.is_output_list})

    def get_io_type(self):
        return self.io_type


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class _Type:
    """A ComfyType: `Input` and `Output` classes bound to one io_type (the real @comfytype)."""
    io_type = None


def _bind(cls, io_type):
    cls.io_type = io_type
    for name in ("Input", "Output"):
        inner = cls.__dict__.get(name) or getattr(cls, name, None)
        if inner is not None:
            setattr(cls, name, type(inner.__name__, (inner,), {"io_type": io_type}))
    return cls


class Boolean(_Type):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     label_on=None, label_off=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.label_on, self.label_off = label_on, label_off

        def as_dict(self):
            return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})

    Output = Output


class Int(_Type):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, control_after_generate=None, display_mode=None, socketless=None,
                     force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step = min, max, step
            self.control_after_generate, self.display_mode = control_after_generate, display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "min": self.min, "max": self.max, "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None})

    Output = Output


class Float(_Type):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, round=None, display_mode=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.min, self.max, self.step, self.round, self.display_mode = min, max, step, round, display_mode

        def as_dict(self):
            return super().as_dict() | prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                   "round": self.round, "display": self.display_mode})

    Output = Output


class String(_Type):
    class Input(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                     placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

        def as_dict(self):
            return super().as_dict() | prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                   "dynamicPrompts": self.dynamic_prompts})

    Output = Output


class Combo(_Type):
    class Input(WidgetInput):
        def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                     default=None, control_after_generate=None, upload=None, image_folder=None, remote=None,
                     socketless=None):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [v.value for v in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.multiselect, self.options = False, options
            self.control_after_generate, self.upload, self.image_folder, self.remote = (
                control_after_generate, upload, image_folder, remote)

        def as_dict(self):
            return super().as_dict() | prune_dict({
                "multiselect": self.multiselect, "options": self.options,
                "control_after_generate": self.control_after_generate,
                **({self.upload.value: True} if self.upload is not None else {}),
                "image_folder": self.image_folder.value if self.image_folder else None,
                "remote": self.remote.as_dict() if self.remote else None})

    Output = Output


class Image(_Type):
    Input, Output = Input, Output


class Model(_Type):
    Input, Output = Input, Output


class Clip(_Type):
    Input, Output = Input, Output


class Vae(_Type):
    Input, Output = Input, Output


for _cls, _name in ((Boolean, "BOOLEAN"), (Int, "INT"), (Float, "FLOAT"), (String, "STRING"), (Combo, "COMBO"),
                    (Image, "IMAGE"), (Model, "MODEL"), (Clip, "CLIP"), (Vae, "VAE")):
    _bind(_cls, _name)


def Custom(io_type: str):
    """A ComfyType for a pack's own socket type."""
    return _bind(type("CustomComfyType", (_Type,), {"Input": Input, "Output": Output}), io_type)


# --- hidden values ------------------------------------------------------------------------------------------------

class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


class HiddenHolder:
    def __init__(self, values: dict):
        for hidden in Hidden:
            setattr(self, hidden.name, values.get(hidden))

    def __getattr__(self, key):
        return None


# --- the schema and the node --------------------------------------------------------------------------------------

@dataclass
class Schema:
    node_id: str
    display_name: str = None
    category: str = "sd"
    inputs: list = None
    outputs: list = None
    hidden: list = None
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def validate(self):
        input_ids = [i.id for i in self.inputs or []]
        output_ids = [o.id for o in self.outputs or []]
        issues = []
        if len(set(input_ids)) != len(input_ids):
            issues.append(f"Input ids must be unique: {input_ids}")
        if len(set(output_ids)) != len(output_ids):
            issues.append(f"Output ids must be unique: {output_ids}")
        if set(input_ids) & set(output_ids):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(input_ids) & set(output_ids)} "
                          "are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self):
        if self.is_output_node:      # output nodes get what SaveImage needs to write metadata
            self.hidden = list(self.hidden or [])
            for hidden in (Hidden.prompt, Hidden.extra_pnginfo):
                if hidden not in self.hidden:
                    self.hidden.append(hidden)
        for index, output in enumerate(self.outputs or []):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def get_v1_info(self, cls) -> dict:
        inputs = {"required": {}}
        for i in self.inputs or []:
            as_dict = i.as_dict()
            as_dict.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), as_dict)
        for hidden in self.hidden or []:
            inputs.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        outputs = self.outputs or []
        return asdict(_NodeInfoV1(
            input=inputs, input_order={key: list(value) for key, value in inputs.items()},
            output=[o.io_type for o in outputs], output_is_list=[o.is_output_list for o in outputs],
            output_name=[o.display_name or o.io_type for o in outputs],
            output_tooltips=[o.tooltip or None for o in outputs], name=self.node_id, display_name=self.display_name,
            description=self.description, python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            category=self.category, output_node=self.is_output_node, deprecated=self.is_deprecated,
            experimental=self.is_experimental, api_node=self.is_api_node))


@dataclass
class _NodeInfoV1:     # field order of the real NodeInfoV1 (the /object_info entry)
    input: dict = None
    input_order: dict = None
    output: list = None
    output_is_list: list = None
    output_name: list = None
    output_tooltips: list = None
    name: str = None
    display_name: str = None
    description: str = None
    python_module: Any = None
    category: str = None
    output_node: bool = None
    deprecated: bool = None
    experimental: bool = None
    api_node: bool = None


class NodeOutput:
    def __init__(self, *args, ui=None, expand=None, block_execution=None):
        self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

    @property
    def result(self):
        return self.args if len(self.args) > 0 else None

    def __getitem__(self, index):
        return self.args[index]


class ComfyNode:
    """Base of V3 nodes: classmethods only, `execute` runs on a locked clone of the class."""
    RELATIVE_PYTHON_MODULE = None
    hidden: HiddenHolder = None

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def validate_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        for name in ("define_schema", "execute"):
            if first_real_override(cls, name) is None:
                raise Exception(f"No {name} function was defined for node class {cls.__name__}.")
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def GET_NODE_INFO_V1(cls) -> dict:
        return cls.GET_SCHEMA().get_v1_info(cls)

    @classmethod
    def INPUT_TYPES(cls, include_hidden=True) -> dict:
        inputs = cls.GET_NODE_INFO_V1()["input"]
        if not include_hidden:
            inputs.pop("hidden", None)
        return inputs

    @classmethod
    def PREPARE_CLASS_CLONE(cls, hidden_inputs: dict):
        """The class `execute` runs on: a clone carrying the hidden values, locked against assignment (ComfyUI
        makes a node keep no state between runs this way)."""
        clone = type(f"{cls.__name__}Clone", (cls,), {"hidden": HiddenHolder(hidden_inputs or {})})

        class Locked(type):
            def __setattr__(cls_, name, value):
                raise AttributeError(f"Cannot modify class attribute '{name}' on locked class '{cls_.__name__}'")

        return Locked(clone.__name__, (clone,), {})


def first_real_override(cls, name):
    """The override of a ComfyNode placeholder (validate_inputs, fingerprint_inputs, ...), or None: ComfyUI calls
    these hooks only when a node defines them."""
    placeholder = ComfyNode.__dict__[name].__func__
    for klass in cls.__mro__:
        if klass is ComfyNode:
            return None
        if name in klass.__dict__ and getattr(klass, name).__func__ is not placeholder:
            return getattr(cls, name)
    return None
