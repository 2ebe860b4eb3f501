"""Structural checks of ComfyUI workflow files, UI (graph editor) format and API (/prompt) format, without ComfyUI.

Node definitions use the shape of ComfyUI's `/object_info` entries (`input`, `input_order`, `output`,
`output_name`, `output_is_list`, `output_node`): the pack's nodes are described from their own schema exactly
as ComfyUI's server does it, and the few core nodes the shipped workflows use are described by CORE_NODES, a
hand-written table (ComfyUI 0.3.64) that the real-ComfyUI integration test compares with the server's
/object_info so that it cannot drift.

Every check returns a list of problems (strings naming the node and the input); an empty list means valid.
"""
import inspect
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Files:
    """A COMBO whose options are the files of a ComfyUI folder (they differ between machines)."""
    folder: str


# KSampler's sampler and scheduler lists in ComfyUI 0.3.64: the Prompt Beam Flux Generator offers exactly these
# (comfy.samplers.KSampler.SAMPLERS / SCHEDULERS), as recorded from a real server in tests/fixtures.
KSAMPLER_LISTS = {name: spec for name, spec in json.loads(
    (Path(__file__).parents[1] / "fixtures" / "object_info_v1.json").read_text())["PromptBeamFluxGenerator"]["input"][
    "required"].items() if name in ("sampler_name", "scheduler")}

# ComfyUI 0.3.64 core nodes used by the shipped workflows (GET /object_info/<name>, hidden inputs left out).
CORE_NODES = {
    "UNETLoader": {
        "input": {"required": {
            "unet_name": [Files("diffusion_models")],
            "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"]]}},
        "output": ["MODEL"], "output_name": ["MODEL"], "output_is_list": [False], "output_node": False},
    "DualCLIPLoader": {
        "input": {"required": {
            "clip_name1": [Files("text_encoders")],
            "clip_name2": [Files("text_encoders")],
            "type": [["sdxl", "sd3", "flux", "hunyuan_video", "hidream", "hunyuan_image"]]},
            "optional": {"device": [["default", "cpu"], {"advanced": True}]}},
        "output": ["CLIP"], "output_name": ["CLIP"], "output_is_list": [False], "output_node": False},
    "VAELoader": {
        "input": {"required": {"vae_name": [Files("vae")]}},
        "output": ["VAE"], "output_name": ["VAE"], "output_is_list": [False], "output_node": False},
    "LoadImage": {
        "input": {"required": {"image": [Files("input"), {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"], "output_name": ["IMAGE", "MASK"], "output_is_list": [False, False],
        "output_node": False},
    "ImageBatch": {
        "input": {"required": {"image1": ["IMAGE"], "image2": ["IMAGE"]}},
        "output": ["IMAGE"], "output_name": ["IMAGE"], "output_is_list": [False], "output_node": False},
    "PrimitiveStringMultiline": {
        "input": {"required": {"value": ["STRING", {"multiline": True}]}},
        "output": ["STRING"], "output_name": ["STRING"], "output_is_list": [False], "output_node": False},
    "SaveImage": {
        "input": {"required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}},
        "output": [], "output_name": [], "output_is_list": [], "output_node": True},
    "PreviewImage": {
        "input": {"required": {"images": ["IMAGE"]}},
        "output": [], "output_name": [], "output_is_list": [], "output_node": True},
    "PreviewAny": {
        "input": {"required": {"source": ["*", {}]}},
        "output": [], "output_name": [], "output_is_list": [], "output_node": True},
    # beam_then_upscale: the winner re-rendered at 2x (img2img) with the standard Flux chain
    "ImageScaleBy": {
        "input": {"required": {
            "image": ["IMAGE"],
            "upscale_method": [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]],
            "scale_by": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}]}},
        "output": ["IMAGE"], "output_name": ["IMAGE"], "output_is_list": [False], "output_node": False},
    "VAEEncode": {
        "input": {"required": {"pixels": ["IMAGE"], "vae": ["VAE"]}},
        "output": ["LATENT"], "output_name": ["LATENT"], "output_is_list": [False], "output_node": False},
    "CLIPTextEncode": {
        "input": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"], "output_is_list": [False],
        "output_node": False},
    "FluxGuidance": {
        "input": {"required": {"conditioning": ["CONDITIONING"],
                               "guidance": ["FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"], "output_is_list": [False],
        "output_node": False},
    "ConditioningZeroOut": {
        "input": {"required": {"conditioning": ["CONDITIONING"]}},
        "output": ["CONDITIONING"], "output_name": ["CONDITIONING"], "output_is_list": [False],
        "output_node": False},
    "KSampler": {
        "input": {"required": {
            "model": ["MODEL"],
            "seed": ["INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
            "sampler_name": [KSAMPLER_LISTS["sampler_name"][0]],
            "scheduler": [KSAMPLER_LISTS["scheduler"][0]],
            "positive": ["CONDITIONING"], "negative": ["CONDITIONING"], "latent_image": ["LATENT"],
            "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]}},
        "output": ["LATENT"], "output_name": ["LATENT"], "output_is_list": [False], "output_node": False},
    "VAEDecode": {
        "input": {"required": {"samples": ["LATENT"], "vae": ["VAE"]}},
        "output": ["IMAGE"], "output_name": ["IMAGE"], "output_is_list": [False], "output_node": False},
}

# Nodes that exist only in the graph editor: saved in UI files, never sent to the server.
EDITOR_ONLY_NODES = {
    "Note": {"input": {"required": {"text": ["STRING", {"multiline": True}]}},
             "output": [], "output_name": [], "output_is_list": [], "output_node": False},
    "MarkdownNote": {"input": {"required": {"text": ["STRING", {"multiline": True}]}},
                     "output": [], "output_name": [], "output_is_list": [], "output_node": False},
}

# Widgets the editor adds to a node on its own and sends to /prompt, where ComfyUI ignores them (they are not in
# the node's INPUT_TYPES): PreviewAny's text box. They are not saved in widgets_values.
EDITOR_PROMPT_EXTRAS = {"PreviewAny": {"preview": ""}}

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
# The editor's value for the LoadImage "upload" button widget (IMAGEUPLOAD), saved in widgets_values.
UPLOAD_VALUE = "image"


def node_info(node_class) -> dict:
    """A node class described the way ComfyUI's GET /object_info does (server.py node_info): a V3 node by its
    schema (GET_NODE_INFO_V1), a V1 node from its class attributes."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        return node_class.GET_NODE_INFO_V1()
    inputs = node_class.INPUT_TYPES()
    outputs = list(node_class.RETURN_TYPES)
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": outputs,
        "output_name": list(getattr(node_class, "RETURN_NAMES", outputs)),
        "output_is_list": list(getattr(node_class, "OUTPUT_IS_LIST", [False] * len(outputs))),
        "output_node": getattr(node_class, "OUTPUT_NODE", False) is True,
    }


def node_definitions(node_class_mappings: dict) -> dict:
    """Definitions of every node a shipped workflow may use: the pack's nodes, the core table, editor-only nodes."""
    definitions = {name: node_info(cls) for name, cls in node_class_mappings.items()}
    definitions.update(CORE_NODES)
    definitions.update(EDITOR_ONLY_NODES)
    return definitions


# --- reading a definition -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSpec:
    name: str
    type: object          # "INT", "IMAGE", ... or a list of combo options, or Files
    options: dict
    required: bool

    @property
    def type_name(self) -> str:
        return "COMBO" if isinstance(self.type, (list, tuple, Files)) else str(self.type)

    @property
    def is_widget(self) -> bool:
        return self.type_name in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def has_control(self) -> bool:
        """The editor adds a control_after_generate value after this widget (frontend 1.27 rule)."""
        if self.type_name == "INT":
            return bool(self.options.get("control_after_generate", self.name in ("seed", "noise_seed")))
        return self.type_name == "COMBO" and bool(self.options.get("control_after_generate", False))

    @property
    def has_upload(self) -> bool:
        return self.type_name == "COMBO" and bool(self.options.get("image_upload", False))


def input_specs(definition: dict) -> list:
    """Inputs in widget order: required then optional, each in declaration order (hidden inputs excluded)."""
    specs = []
    for category in ("required", "optional"):
        for name, spec in (definition["input"].get(category) or {}).items():
            spec = list(spec)
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            type_ = spec[0]
            if type_ == "COMBO" and "options" in options:  # the V3 spelling of a combo
                type_ = list(options["options"])
            specs.append(InputSpec(name, type_, options, category == "required"))
    return specs


def widget_slots(definition: dict) -> list:
    """What each position of a UI node's widgets_values holds: (input name, "value" | "control" | "upload")."""
    slots = []
    for spec in input_specs(definition):
        if not spec.is_widget:
            continue
        slots.append((spec.name, "value"))
        if spec.has_control:
            slots.append((spec.name, "control"))
        if spec.has_upload:
            slots.append((spec.name, "upload"))
    return slots


def types_match(output_type, input_type) -> bool:
    """ComfyUI's link rule (comfy_execution/validation.py): equal, "*" on either side, or overlapping "A,B" unions."""
    if isinstance(input_type, (list, tuple, Files)):
        input_type = "COMBO"
    output_type, input_type = str(output_type), str(input_type)
    if output_type == input_type or "*" in (output_type, input_type):
        return True
    return bool({t.strip() for t in output_type.split(",")} & {t.strip() for t in input_type.split(",")})


def check_value(spec: InputSpec, value, where: str, files: dict = None) -> list:
    """Problems with a constant value given to an input, as ComfyUI's validation would see them."""
    kind = spec.type_name
    label = f"{where} input '{spec.name}'"
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{label}: {value!r} is not an INT"]
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{label}: {value!r} is not a FLOAT"]
    elif kind == "STRING":
        if not isinstance(value, str):
            return [f"{label}: {value!r} is not a STRING"]
    elif kind == "BOOLEAN":
        if not isinstance(value, bool):
            return [f"{label}: {value!r} is not a BOOLEAN"]
    elif kind == "COMBO":
        if isinstance(spec.type, Files):
            allowed = None if files is None else files.get(spec.type.folder)
            if not isinstance(value, str) or not value:
                return [f"{label}: {value!r} is not a file name"]
            if allowed is not None and value not in allowed:
                return [f"{label}: '{value}' is not a file of the '{spec.type.folder}' folder"]
        elif value not in spec.type:
            return [f"{label}: '{value}' not in {list(spec.type)}"]
    if kind in ("INT", "FLOAT"):
        if "min" in spec.options and value < spec.options["min"]:
            return [f"{label}: {value} is smaller than min {spec.options['min']}"]
        if "max" in spec.options and value > spec.options["max"]:
            return [f"{label}: {value} is bigger than max {spec.options['max']}"]
    return []


# --- UI format --------------------------------------------------------------------------------------------------

def check_ui(workflow: dict, definitions: dict, files: dict = None) -> list:
    """A UI workflow as the graph editor saves it: node types known, widgets_values complete, links consistent."""
    problems = []
    for key in ("nodes", "links", "groups", "last_node_id", "last_link_id", "version"):
        if key not in workflow:
            problems.append(f"workflow: missing top-level '{key}'")
    if problems:
        return problems
    nodes = {}
    for node in workflow["nodes"]:
        if node["id"] in nodes:
            problems.append(f"node {node['id']}: duplicate id")
        nodes[node["id"]] = node
    if nodes and workflow["last_node_id"] < max(nodes):
        problems.append(f"workflow: last_node_id {workflow['last_node_id']} < highest node id {max(nodes)}")
    links = {}
    for link in workflow["links"]:
        if len(link) != 6:
            problems.append(f"link {link!r}: not [id, from_node, from_slot, to_node, to_slot, type]")
            continue
        if link[0] in links:
            problems.append(f"link {link[0]}: duplicate id")
        links[link[0]] = link
    if links and workflow["last_link_id"] < max(links):
        problems.append(f"workflow: last_link_id {workflow['last_link_id']} < highest link id {max(links)}")

    for node in nodes.values():
        problems += _check_ui_node(node, definitions, links, files)
    for link in links.values():
        problems += _check_ui_link(link, nodes, definitions)
    for group in workflow["groups"]:
        if not group.get("title") or len(group.get("bounding", [])) != 4:
            problems.append(f"group {group.get('id')}: needs a title and a 4-number bounding box")
    return problems


def _check_ui_node(node: dict, definitions: dict, links: dict, files: dict) -> list:
    where = f"node {node['id']} ({node['type']})"
    definition = definitions.get(node["type"])
    if definition is None:
        return [f"{where}: unknown node type"]
    problems = []
    if node.get("mode", 0) not in (0, 2, 4):
        problems.append(f"{where}: unknown mode {node.get('mode')}")
    specs = {spec.name: spec for spec in input_specs(definition)}

    slots = widget_slots(definition)
    values = node.get("widgets_values", [])
    if not isinstance(values, list) or len(values) != len(slots):
        problems.append(f"{where}: widgets_values has {len(values) if isinstance(values, list) else values!r} "
                        f"values, the node has {len(slots)} widgets {[f'{n}.{k}' for n, k in slots]}")
    else:
        for (name, kind), value in zip(slots, values):
            if kind == "value":
                problems += check_value(specs[name], value, where, files)
            elif kind == "control" and value not in CONTROL_VALUES:
                problems.append(f"{where} input '{name}': control_after_generate {value!r} not in {CONTROL_VALUES}")
            elif kind == "upload" and value != UPLOAD_VALUE:
                problems.append(f"{where} input '{name}': upload widget value {value!r} is not '{UPLOAD_VALUE}'")

    seen = set()
    for slot, entry in enumerate(node.get("inputs", [])):
        spec = specs.get(entry["name"])
        if entry["name"] == "upload" and any(s.has_upload for s in specs.values()):
            # The editor's upload button is saved as a widget socket of its own.
            if entry.get("type") != "IMAGEUPLOAD" or entry.get("link") is not None:
                problems.append(f"{where}: the upload socket must be an unconnected IMAGEUPLOAD widget")
            continue
        if spec is None:
            problems.append(f"{where}: input '{entry['name']}' is not an input of {node['type']}")
            continue
        seen.add(spec.name)
        if entry.get("type") != spec.type_name:
            problems.append(f"{where} input '{spec.name}': type {entry.get('type')} != {spec.type_name}")
        if spec.is_widget != ("widget" in entry):
            problems.append(f"{where} input '{spec.name}': widget socket mismatch")
        link_id = entry.get("link")
        if link_id is not None:
            link = links.get(link_id)
            if link is None:
                problems.append(f"{where} input '{spec.name}': link {link_id} does not exist")
            elif (link[3], link[4]) != (node["id"], slot):
                problems.append(f"{where} input '{spec.name}': link {link_id} ends at node {link[3]} slot {link[4]}")
        elif spec.required and not spec.is_widget:
            problems.append(f"{where}: required input '{spec.name}' is not connected")
    for spec in specs.values():
        if spec.name not in seen and spec.required and not spec.is_widget:
            problems.append(f"{where}: required input '{spec.name}' has no socket")

    outputs = node.get("outputs", [])
    declared = list(zip(definition["output_name"], definition["output"]))
    if [(o["name"], o["type"]) for o in outputs] != [(n, t) for n, t in declared]:
        problems.append(f"{where}: outputs {[(o['name'], o['type']) for o in outputs]} != {declared}")
    for slot, output in enumerate(outputs):
        for link_id in output.get("links") or []:
            link = links.get(link_id)
            if link is None:
                problems.append(f"{where} output {slot}: link {link_id} does not exist")
            elif (link[1], link[2]) != (node["id"], slot):
                problems.append(f"{where} output {slot}: link {link_id} starts at node {link[1]} slot {link[2]}")
    return problems


def _check_ui_link(link: list, nodes: dict, definitions: dict) -> list:
    link_id, source_id, source_slot, target_id, target_slot, link_type = link
    source, target = nodes.get(source_id), nodes.get(target_id)
    if source is None or target is None:
        return [f"link {link_id}: node {source_id if source is None else target_id} does not exist"]
    if source_slot >= len(source.get("outputs", [])) or target_slot >= len(target.get("inputs", [])):
        return [f"link {link_id}: slot out of range"]
    output, entry = source["outputs"][source_slot], target["inputs"][target_slot]
    problems = []
    if link_id not in (output.get("links") or []):
        problems.append(f"link {link_id}: not listed by node {source_id} output {source_slot}")
    if entry.get("link") != link_id:
        problems.append(f"link {link_id}: node {target_id} input '{entry['name']}' does not point back at it")
    # The editor types a link by its target socket (LiteGraph: input.type || output.type).
    if link_type != (entry.get("type") or output["type"]):
        problems.append(f"link {link_id}: type {link_type} != node {target_id} input '{entry['name']}' type "
                        f"{entry.get('type')}")
    spec = {s.name: s for s in input_specs(definitions.get(target["type"], {"input": {}}))}.get(entry["name"])
    if spec is not None and not types_match(output["type"], spec.type):
        problems.append(f"link {link_id}: {output['type']} into node {target_id} input '{entry['name']}' "
                        f"({spec.type_name})")
    return problems


# --- API format -------------------------------------------------------------------------------------------------

def check_api(prompt: dict, definitions: dict, node_class_mappings: dict = None, files: dict = None) -> list:
    """An API workflow as POST /prompt takes it, checked the way ComfyUI's validate_inputs does.

    With node_class_mappings, a node's own validation (V3 validate_inputs, V1 VALIDATE_INPUTS) is consulted for its
    constant inputs, and the inputs it names skip the built-in range and combo checks, as in ComfyUI.
    """
    problems = []
    if not isinstance(prompt, dict) or not prompt:
        return ["prompt: not a non-empty object of nodes"]
    has_output = False
    for node_id, node in prompt.items():
        where = f"node {node_id} ({node.get('class_type')})"
        definition = definitions.get(node.get("class_type"))
        if definition is None or node.get("class_type") in EDITOR_ONLY_NODES:
            problems.append(f"{where}: not a server node type")
            continue
        has_output |= bool(definition["output_node"])
        inputs = node.get("inputs", {})
        specs = {spec.name: spec for spec in input_specs(definition)}
        extras = EDITOR_PROMPT_EXTRAS.get(node["class_type"], {})
        for name in inputs:
            if name not in specs and name not in extras:
                problems.append(f"{where}: '{name}' is not an input of {node['class_type']}")
        names, takes_all, validate = _own_validation(node_class_mappings, node["class_type"])
        arguments = {}
        for spec in specs.values():
            if spec.name not in inputs:
                if spec.required:
                    problems.append(f"{where}: required input '{spec.name}' is missing")
                continue
            value = inputs[spec.name]
            own = spec.name in names or takes_all
            if isinstance(value, list):
                problems += _check_api_link(prompt, definitions, where, spec, value)
                value = None            # a linked value is not known before the graph runs
            elif not own:
                problems += check_value(spec, value, where, files)
            if own:
                arguments[spec.name] = value
        if validate is not None:
            result = validate(**arguments)
            if result is not True:
                problems.append(f"{where}: its own validation says {result!r}")
    if not has_output:
        problems.append("prompt: no output node")
    return problems


def _own_validation(node_class_mappings, class_type):
    """(input names the node's own validation takes, whether it takes **kwargs, the function) for a pack node, else
    none. A V3 node's validate_inputs counts only when the node overrides io.ComfyNode's placeholder, as ComfyUI's
    first_real_override decides; a V1 node's is VALIDATE_INPUTS.

    As in ComfyUI, the inputs it names are passed to it (linked ones as None) and skip the built-in checks."""
    cls = (node_class_mappings or {}).get(class_type)
    if cls is None:
        return (), False, None
    function = getattr(cls, "VALIDATE_INPUTS", None)
    if hasattr(cls, "GET_SCHEMA"):
        overrides = [klass for klass in cls.__mro__ if "validate_inputs" in klass.__dict__]
        function = cls.validate_inputs if overrides and overrides[0].__name__ != "ComfyNode" else None
    if function is None:
        return (), False, None
    spec = inspect.getfullargspec(function)
    return tuple(a for a in spec.args if a != "cls"), spec.varkw is not None, function


def _check_api_link(prompt, definitions, where, spec, value) -> list:
    if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
        return [f"{where} input '{spec.name}': link {value!r} is not [node id string, output index]"]
    source = prompt.get(value[0])
    if source is None:
        return [f"{where} input '{spec.name}': linked node {value[0]} does not exist"]
    outputs = definitions.get(source.get("class_type"), {}).get("output", [])
    if value[1] >= len(outputs):
        return [f"{where} input '{spec.name}': node {value[0]} has no output {value[1]}"]
    if not types_match(outputs[value[1]], spec.type):
        return [f"{where} input '{spec.name}': {outputs[value[1]]} from node {value[0]} does not fit "
                f"{spec.type_name}"]
    return []


# --- UI <-> API ---------------------------------------------------------------------------------------------------

def compare_ui_api(workflow: dict, prompt: dict, definitions: dict) -> list:
    """Same nodes, same widget values, same links: the API twin is the UI workflow as graphToPrompt() converts it.

    Editor-only nodes and muted nodes are left out; a link from a bypassed node is followed through the bypassed
    node's input of the link's type, or dropped when that input is not connected (frontend 1.27 rules).
    """
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    server_nodes = {str(n["id"]): n for n in workflow["nodes"]
                    if n["type"] not in EDITOR_ONLY_NODES and n.get("mode", 0) == 0}
    if set(server_nodes) != set(prompt):
        problems.append(f"node ids differ: UI {sorted(server_nodes, key=int)} API {sorted(prompt, key=int)}")
    links = {link[0]: link for link in workflow["links"]}
    for node_id in sorted(set(server_nodes) & set(prompt), key=int):
        node, api = server_nodes[node_id], prompt[node_id]
        where = f"node {node_id} ({node['type']})"
        if api.get("class_type") != node["type"]:
            problems.append(f"{where}: API class_type {api.get('class_type')}")
            continue
        expected = dict(EDITOR_PROMPT_EXTRAS.get(node["type"], {}))
        for (name, kind), value in zip(widget_slots(definitions[node["type"]]), node.get("widgets_values", [])):
            if kind == "value" and value is not None:
                expected[name] = value
        for entry in node.get("inputs", []):
            if entry.get("link") is None:
                continue
            source = _resolve_link(links[entry["link"]], nodes, links)
            if source is not None:
                expected[entry["name"]] = source
            else:
                expected.pop(entry["name"], None)
        if api.get("inputs") != expected:
            problems.append(f"{where}: API inputs {api.get('inputs')} != UI {expected}")
    return problems


def _resolve_link(link, nodes, links, depth=0):
    """[source id, output slot] the server sees for a UI link, or None when a bypassed node cuts it."""
    source = nodes[link[1]]
    if source.get("mode", 0) != 4 or depth > len(nodes):
        return [str(link[1]), link[2]]
    wanted = link[5]
    inputs = source.get("inputs", [])
    match = next((i for i in inputs if i.get("type") == wanted), None) \
        or next((i for i in inputs if types_match(i.get("type"), wanted)), None)
    if match is None or match.get("link") is None:
        return None
    return _resolve_link(links[match["link"]], nodes, links, depth + 1)


def load(path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))
