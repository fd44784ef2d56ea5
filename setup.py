"""stylemotion: facial-expression videos from a StyleGAN2 latent space, streamed in real time.

The CPU install needs PyTorch first (``pip install torch==2.13.0`` on the project machines; any torch >= 2.10
works): a bare ``torch`` requirement would pull several GB of CUDA libraries.

Extras: ``onnx`` (export and verify on the CPU: onnx, onnxscript, onnxruntime), ``gpu`` (the same with
onnxruntime-gpu instead of onnxruntime), ``tensorrt``, ``ray``, ``dev`` (the test tools). Choose ``onnx`` *or*
``gpu``, never both: onnxruntime and onnxruntime-gpu install the same ``onnxruntime`` module and overwrite each
other. CPU developers install ``.[dev,onnx]``, GPU developers ``.[dev,gpu]``.
"""
import os
import subprocess
import sys

from setuptools import find_packages, setup

setup(
    name="stylemotion",
    version="0.1.0",
    description="Facial-expression videos from a StyleGAN2 latent space, streamed in real time",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["stylemotion", "stylemotion.*"]),
    # The bundled digiface-64 model: generator (fp16 safetensors), emotion directions, emotion LSTM, model card.
    package_data={"stylemotion": ["data/*/*.safetensors", "data/*/*.npz", "data/*/*.md", "data/*/*.json"]},
    install_requires=[
        # Checkpoints load with torch.load(weights_only=True). That loader could run code before 2.6
        # (CVE-2025-32434) and could corrupt memory on crafted files before 2.10 (CVE-2026-24747).
        "torch>=2.10",
        "numpy>=1.24",
        "safetensors>=0.4",
        "pillow>=9",
        "tqdm>=4.60",
        "opencv-python-headless>=4.10,<5",  # 5.0 has no CascadeClassifier
        "h5py>=3.8",  # the Keras emotion classifier's weights
        "scikit-learn>=1.3",  # emotion directions
        "imageio-ffmpeg>=0.5",  # H.264 MP4 output through the ffmpeg binary its wheel ships
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxscript>=0.2", "onnxruntime>=1.17"],  # export and verify (CPU)
        "gpu": ["onnx>=1.15", "onnxscript>=0.2", "onnxruntime-gpu>=1.17"],  # instead of "onnx", never with it
        "tensorrt": ["tensorrt>=10.0", "onnx>=1.15", "onnxscript>=0.2"],
        "ray": ["ray[data]>=2.51"],  # render-batch --ray (Ray Data actor pools)
        "openvino": ["openvino>=2024.0"],  # the OpenVINO engine (CPU): fp32, and bf16 where the CPU has it
        "server": ["aiohttp>=3.9", "aiortc>=1.9", "python-osc>=1.8"],  # stylemotion serve (--webrtc, --osc)
        "camera": ["pyvirtualcam>=0.11"],  # stylemotion serve --virtual-camera
        "bench": ["matplotlib>=3.8"],  # the benchmarks' and the soak's charts (bench/results/*.png)
        # Test tools only (skimage: real face photos for tests); add "onnx" on the CPU or "gpu" on a GPU.
        # selenium drives Debian's chromium in the page test (.ci/run installs chromium and chromium-driver).
        "dev": ["pytest>=7", "pytest-timeout>=2", "scikit-image>=0.21", "selenium>=4.20", "hypothesis>=6.100"],
    },
    entry_points={"console_scripts": ["stylemotion=stylemotion.cli:main"]},
)

# STYLEMOTION_BUILD_EXT=1 also builds cpp_ext (the CUDA kernels too when PyTorch sees a GPU). It needs PyTorch in
# the environment that runs this file: `STYLEMOTION_BUILD_EXT=1 pip install --no-build-isolation -e .`, or
# afterwards `python -m stylemotion.extension build [--cuda]`. Without it the package uses the PyTorch references.
if os.environ.get("STYLEMOTION_BUILD_EXT") == "1" and any(a in sys.argv for a in ("develop", "editable_wheel",
                                                                                     "bdist_wheel", "install")):
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.run([sys.executable, "-m", "stylemotion.extension", "build"], cwd=here, check=True,
                   env={**os.environ, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")})
