from setuptools import find_packages, setup

setup(
    name="squeeze",
    version="0.1.0",
    description="Squeeze: prune, quantize and compile ONNX models with Apache TVM",
    python_requires=">=3.10",
    packages=find_packages(include=["compiler*", "passes*", "targets*"]),
    package_data={"compiler.zoo": ["data/*.onnx", "data/*.npz"]},
    install_requires=[
        "apache-tvm==0.27.0.post1",
        "apache-tvm-ffi==0.1.14.post1",
        "onnx",
        "onnxruntime",
        "numpy",
        "networkx",
        "psutil",
        "cloudpickle",
        "xgboost-cpu",
        "tqdm",
        "pillow",
        "matplotlib",
        "scikit-image",
    ],
    extras_require={"torch": ["torch==2.13.0"], "test": ["pytest"]},
    entry_points={"console_scripts": ["squeeze=compiler.cli:main"]},
)
