import ArgumentParser
import LoRAKit
