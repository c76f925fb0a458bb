"""Method names of runs, as in the paper's tables, from each run's config.json (TrainConfig.to_dict())."""
import collections

MIX_PROTOCOL_NAMES = {"none": "SIFA", "synthmix": "SIFA+SynthMix", "mixup": "SIFA+Mixup", "cutmix": "SIFA+CutMix"}


def method_name(config, show_k=False):
    """"Source only", "Oracle", "CycleGAN", "SIFA", "SIFA+SynthMix", "SIFA+Mixup" or "SIFA+CutMix", with
    "(k=K)" for SynthMix when `show_k`, "Model 0" when the image discriminators are off and
    "merged" for runs of --update_schedule=merged."""
    if config.get("kind") == "segmenter":
        return "Oracle" if config.get("train_domain") == "target" else "Source only"
    if config.get("kind") == "cyclegan":
        return "CycleGAN"
    mixing = config.get("synthmix", {})
    protocol = mixing.get("protocol", "none")
    details = []
    if protocol == "synthmix" and show_k:
        details.append(f"k={mixing.get('k')}")
    if not mixing.get("image_discriminators", True):
        details.append("Model 0")
    if config.get("update_schedule", "official") == "merged":
        details.append("merged")
    name = MIX_PROTOCOL_NAMES[protocol]
    return f"{name} ({', '.join(details)})" if details else name


def method_names(configs, folder_names):
    """One name per run; a run without config (None) is named by its folder, and names that
    repeat get their folder name appended."""
    synthmix_ks = {c["synthmix"].get("k") for c in configs
                   if c and c.get("kind") != "segmenter" and c.get("synthmix", {}).get("protocol") == "synthmix"}
    names = [method_name(c, show_k=len(synthmix_ks) > 1) if c else folder
             for c, folder in zip(configs, folder_names)]
    counts = collections.Counter(names)
    return [f"{name} [{folder}]" if counts[name] > 1 else name for name, folder in zip(names, folder_names)]
