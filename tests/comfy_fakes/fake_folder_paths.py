"""Fake of ComfyUI's folder_paths: model folders, output/temp directories. Tests call `reset(base)`."""
import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict = {}
base_path = models_dir = output_directory = temp_directory = input_directory = ""


def reset(base: str) -> None:
    """Lay out a fresh ComfyUI-like base directory (models/, output/, temp/, input/)."""
    global base_path, models_dir, output_directory, temp_directory, input_directory
    base_path = base
    models_dir = os.path.join(base, "models")
    output_directory = os.path.join(base, "output")
    temp_directory = os.path.join(base, "temp")
    input_directory = os.path.join(base, "input")
    folder_names_and_paths.clear()
    for name in ("checkpoints", "loras", "vae", "diffusion_models", "clip_vision"):
        folder_names_and_paths[name] = ([os.path.join(models_dir, name)], set(supported_pt_extensions))
    folder_names_and_paths["text_encoders"] = (
        [os.path.join(models_dir, "text_encoders"), os.path.join(models_dir, "clip")], set(supported_pt_extensions))
    for path in (output_directory, temp_directory, input_directory):
        os.makedirs(path, exist_ok=True)


def get_output_directory() -> str:
    return output_directory


def get_temp_directory() -> str:
    return temp_directory


def get_input_directory() -> str:
    return input_directory


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    paths, exts = folder_names_and_paths.setdefault(folder_name, ([], set(supported_pt_extensions)))
    if full_folder_path in paths:
        paths.remove(full_folder_path)
    if is_default:
        paths.insert(0, full_folder_path)
    else:
        paths.append(full_folder_path)


def get_folder_paths(folder_name: str) -> list:
    return list(folder_names_and_paths[folder_name][0])


def get_filename_list(folder_name: str) -> list:
    if folder_name not in folder_names_and_paths:
        return []
    paths, exts = folder_names_and_paths[folder_name]
    found = set()
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for name in files:
                if not exts or os.path.splitext(name)[1].lower() in exts:
                    found.add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
    return sorted(found)


def get_full_path(folder_name: str, filename: str):
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for root in folder_names_and_paths[folder_name][0]:
        candidate = os.path.join(root, filename)
        if os.path.isfile(candidate):
            return candidate
    return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    path = get_full_path(folder_name, filename)
    if path is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return path


reset(tempfile.mkdtemp(prefix="fake-comfyui-"))   # tests call reset() with their own tmp_path
