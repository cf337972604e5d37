// `import LoRAKit` gives the layers below it too: tensors and formats, tokenizers and chat templates.
@_exported import LoRAFormats
@_exported import LoRATokenizers
