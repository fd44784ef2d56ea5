"""stylemotion: facial-expression videos from a StyleGAN2 latent space, streamed in real time.

The CPU install needs PyTorch first (``pip install torch==2.13.0`` on the project machines; any torch >= 2.6
works): a bare ``torch`` requirement would pull several GB of CUDA libraries. GPU users add the ``gpu`` extra,
TensorRT users the ``tensorrt`` extra.
"""
from setuptools import find_packages, setup

setup(
    name="stylemotion",
    version="0.1.0",
    description="Facial-expression videos from a StyleGAN2 latent space, streamed in real time",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["stylemotion", "stylemotion.*"]),
    install_requires=[
        "torch>=2.6",  # weights-only torch.load is safe from 2.6 (CVE-2025-32434)
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
        "gpu": ["onnxruntime-gpu>=1.17"],
        "tensorrt": ["tensorrt>=10.0", "onnx>=1.15", "onnxscript>=0.2"],
        "ray": ["ray>=2.9"],
        "onnx": ["onnx>=1.15", "onnxscript>=0.2", "onnxruntime>=1.17"],  # export and verify (CPU)
        "dev": ["pytest>=7", "pytest-timeout>=2", "scikit-image>=0.21",  # skimage: real face photos for tests
                "onnx>=1.15", "onnxscript>=0.2", "onnxruntime>=1.17"],
    },
    entry_points={"console_scripts": ["stylemotion=stylemotion.cli:main"]},
)
