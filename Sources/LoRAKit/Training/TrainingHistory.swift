import Foundation

/// The losses of a run: the training loss of every step and each validation loss, kept in the
/// checkpoint so that a resumed run's summary and loss curve cover the whole run.
public struct TrainingHistory: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
        public let step: Int
        public let loss: Double
        public init(step: Int, loss: Double) { self.step = step; self.loss = loss }
    }

    public var train: [Point] = []
    public var validation: [Point] = []

    public init() {}

    public var bestValidation: Point? { validation.min { $0.loss < $1.loss } }

    /// The loss curve as a self-contained SVG image: training loss per step (thin) with its moving
    /// average (bold), and validation loss as dots joined by a line.
    public func svg(title: String = "Loss") -> String {
        var chart = LossChart(title: title)
        if !train.isEmpty {
            chart.series.append(.init(label: nil, points: train, color: "#9ecae1", width: 1))
            chart.series.append(.init(label: "training loss", points: movingAverage(train, window: max(1, train.count / 25)),
                                      color: "#1f77b4", width: 2.5))
        }
        if !validation.isEmpty {
            chart.series.append(.init(label: "validation loss", points: validation, color: "#d62728", width: 2, dots: true))
        }
        return chart.svg()
    }

    /// The mean of the last `window` points at each point.
    func movingAverage(_ points: [Point], window: Int) -> [Point] {
        var sum = 0.0
        return points.enumerated().map { i, p in
            sum += p.loss
            if i >= window { sum -= points[i - window].loss }
            return Point(step: p.step, loss: sum / Double(min(i + 1, window)))
        }
    }
}
