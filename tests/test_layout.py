"""Plugin files must not shadow a MaPLe / PromptSRC checkout's own modules when installed."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# module files of MaPLe's and PromptSRC's datasets/ and trainers/ folders
HOST_MODULES = {
    "datasets": {
        "caltech101",
        "dtd",
        "eurosat",
        "fgvc_aircraft",
        "food101",
        "imagenet",
        "imagenet_a",
        "imagenet_r",
        "imagenet_sketch",
        "imagenetv2",
        "oxford_flowers",
        "oxford_pets",
        "stanford_cars",
        "sun397",
        "ucf101",
    },
    "trainers": {"cocoop", "coop", "imagenet_templates", "independentVL", "maple", "vpt", "zsclip", "promptsrc"},
}


def test_plugin_modules_do_not_shadow_host_modules():
    for folder, host in HOST_MODULES.items():
        ours = {f[:-3] for f in os.listdir(os.path.join(ROOT, folder)) if f.endswith(".py") and f != "__init__.py"}
        assert not ours & host, f"{folder}/ would overwrite {sorted(ours & host)} in a MaPLe checkout"
