import Foundation

/// An endless sequence of training batches: each epoch is the data set in a fresh seeded order, cut
/// into padded batches. Its `position` is small and Codable, so a checkpoint can record exactly
/// where training stopped and a resumed run sees the same batches an uninterrupted one would.
public struct BatchStream: Sendable {
    public struct Position: Codable, Sendable, Equatable {
        /// Epochs completed before the current one.
        public var epoch: Int
        /// Batches of the current epoch already handed out.
        public var index: Int
        /// The order generator as it was before shuffling the current epoch.
        public var random: SeededRandom
    }

    public let set: DataSet
    public let batchSize: Int
    public let padId: Int32
    public private(set) var position: Position
    private var epochBatches: [Batch] = []
    /// The order generator after shuffling the current epoch: where the next epoch starts.
    private var nextRandom: SeededRandom

    /// Batches per epoch (the last may be smaller).
    public var batchesPerEpoch: Int { (set.examples.count + batchSize - 1) / batchSize }

    public init(set: DataSet, batchSize: Int, padId: Int32, seed: UInt64) {
        self.init(set: set, batchSize: batchSize, padId: padId,
                  position: Position(epoch: 0, index: 0, random: SeededRandom(seed: seed)))
    }

    /// Continues from a recorded position.
    public init(set: DataSet, batchSize: Int, padId: Int32, position: Position) {
        precondition(batchSize > 0 && !set.examples.isEmpty, "a batch stream needs examples and a positive batch size")
        self.set = set
        self.batchSize = batchSize
        self.padId = padId
        self.position = position
        nextRandom = position.random
        shuffleEpoch()
    }

    private mutating func shuffleEpoch() {
        var random = position.random
        epochBatches = DataSet.shuffled(set, using: &random).batches(size: batchSize, padId: padId)
        nextRandom = random
    }

    public mutating func next() -> Batch {
        if position.index >= epochBatches.count {
            position = Position(epoch: position.epoch + 1, index: 0, random: nextRandom)
            shuffleEpoch()
        }
        position.index += 1
        return epochBatches[position.index - 1]
    }
}
