// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-lora",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "LoRAKit", targets: ["LoRAKit"]),
        .library(name: "LoRATokenizers", targets: ["LoRATokenizers"]),
        .executable(name: "lora", targets: ["lora"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // The layers, each a target so that imports enforce them: tensors and file formats; tokenizers
        // and chat templates (which read GGUF vocabularies); the engine (ops, models, adapters, data,
        // training, generation), which re-exports both.
        .target(name: "LoRAFormats", dependencies: ["LoRAKernels"]),
        // The SIMD micro-kernels Swift cannot express (per-function target features), in C; chosen at
        // run time by CPU feature (KernelGemm), with the portable Swift kernel as the reference.
        .target(name: "LoRAKernels"),
        .target(name: "LoRATokenizers", dependencies: ["LoRAFormats"]),
        .target(name: "LoRAKit", dependencies: ["LoRAFormats", "LoRATokenizers"]),
        // What the CLI reads besides models and data: train's YAML config files (a library, so the fuzz
        // harnesses test the very code `lora train` runs).
        .target(
            name: "LoRACommandLine",
            dependencies: ["LoRAKit", .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "lora",
            dependencies: ["LoRAKit", "LoRACommandLine", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "MLPClassifier",
            dependencies: ["LoRAKit"],
            path: "Examples/MLPClassifier"
        ),
        // Fuzzing: the harnesses (one per reader of outside input) and the executable that runs them,
        // under libFuzzer when built with -DLIBFUZZER (scripts/fuzz.sh), or on given files otherwise.
        .target(
            name: "LoRAFuzzHarnesses",
            dependencies: ["LoRAKit", "LoRACommandLine"]
        ),
        .executableTarget(
            name: "lora-fuzz",
            dependencies: ["LoRAFuzzHarnesses"]
        ),
        .testTarget(
            name: "LoRAKitTests",
            dependencies: ["LoRAKit", "LoRAFormats", "LoRATokenizers", "LoRACommandLine", "LoRAFuzzHarnesses"],
            exclude: ["Fixtures"]
        ),
    ]
)
