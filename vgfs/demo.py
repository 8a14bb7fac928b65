"""`vgfs demo`: sample -> build -> mount, then a short tour of what the mount holds."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from vgfs.build import build
from vgfs.errors import VGFSError
from vgfs.mount import mount, mounted_fs
from vgfs.options import MountOptions
from vgfs.sample import write_sample


def demo(mountpoint: Path, images: int = 200) -> None:
    mountpoint = mountpoint.absolute()
    umount = f"{_vgfs_command()} umount {shlex.quote(str(mountpoint))}"
    if mounted_fs(mountpoint) is not None:
        raise VGFSError(f"{mountpoint}: already mounted; run `{umount}` first")
    work = mountpoint.with_name(mountpoint.name + "-data")
    release, dataset = work / "release", work / "dataset"
    _say(f"1. writing a synthetic release of {images} images to {release}")
    shutil.rmtree(release, ignore_errors=True)  # a previous demo's: regenerated identically
    write_sample(release, images=images, seed=0)
    _say(f"2. building the dataset folder {dataset}")
    build(release, dataset, force=True)
    mountpoint.mkdir(parents=True, exist_ok=True)
    _say(f"3. mounting it at {mountpoint}")
    mount(str(dataset), str(mountpoint), MountOptions(), foreground=False)
    first = min(os.listdir(mountpoint / "images"), key=int)
    image = mountpoint / "images" / first
    _say("4. a short tour")
    for cmd in (f"ls {mountpoint}",
                f"ls {mountpoint}/images | head -5",
                f"ls -l {image}",
                f"head -c 300 {image}/graph.json; echo",
                f"stat -c '%n: %s bytes' {image}/image.jpg"):
        _say("$ " + cmd)
        subprocess.run(cmd, shell=True, check=False)
    if not (image / "image.jpg").exists():
        raise VGFSError(f"{image}: the demo image has no JPEG")
    _say(f"\nLook around in {mountpoint}, then unmount with:\n  {umount}"
         f"\nThe demo's release and dataset folder stay in {work}.")


def _vgfs_command() -> str:
    """How a shell runs this vgfs: `vgfs` if PATH finds it, else this script by its path
    (`.venv/bin/vgfs demo`), else this interpreter (`python -m vgfs demo`)."""
    if shutil.which("vgfs"):
        return "vgfs"
    script = Path(sys.argv[0])
    if script.name == "vgfs" and os.access(script, os.X_OK):
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m vgfs"


def _say(text: str) -> None:
    print(text, flush=True)
