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
        let width = 720.0, height = 420.0, left = 60.0, right = 20.0, top = 40.0, bottom = 50.0
        let all = train + validation
        guard let first = all.map(\.step).min(), let last = all.map(\.step).max() else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\"></svg>\n"
        }
        let losses = all.map(\.loss).filter(\.isFinite)
        var lo = losses.min() ?? 0, hi = losses.max() ?? 1
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        let x0 = Double(first), x1 = Double(max(last, first + 1))
        func x(_ step: Int) -> Double { left + (Double(step) - x0) / (x1 - x0) * (width - left - right) }
        func y(_ loss: Double) -> Double { top + (hi - loss) / (hi - lo) * (height - top - bottom) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func polyline(_ points: [Point], _ style: String) -> String {
            let coordinates = points.filter { $0.loss.isFinite }.map { "\(f(x($0.step))),\(f(y($0.loss)))" }.joined(separator: " ")
            return "<polyline fill=\"none\" \(style) points=\"\(coordinates)\"/>\n"
        }

        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
        s += "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(f(width / 2))\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(Self.escaped(title))</text>\n"
        // Axes with five ticks each.
        s += "<g stroke=\"#999\"><line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\"/>"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\"/></g>\n"
        for i in 0...4 {
            let loss = lo + (hi - lo) * Double(i) / 4, step = Int((x0 + (x1 - x0) * Double(i) / 4).rounded())
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(loss)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(loss)))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(loss) + 4))\" text-anchor=\"end\">\(String(format: "%.3g", loss))</text>\n"
            s += "<text x=\"\(f(x(step)))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\">\(step)</text>\n"
        }
        s += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\">step</text>\n"
        if !train.isEmpty {
            s += polyline(train, "stroke=\"#9ecae1\" stroke-width=\"1\"")
            s += polyline(movingAverage(train, window: max(1, train.count / 25)), "stroke=\"#1f77b4\" stroke-width=\"2.5\"")
        }
        if !validation.isEmpty {
            s += polyline(validation, "stroke=\"#d62728\" stroke-width=\"2\"")
            for p in validation where p.loss.isFinite {
                s += "<circle cx=\"\(f(x(p.step)))\" cy=\"\(f(y(p.loss)))\" r=\"3.5\" fill=\"#d62728\"/>\n"
            }
        }
        // Legend.
        let lx = width - right - 170
        s += "<g><line x1=\"\(f(lx))\" y1=\"52\" x2=\"\(f(lx + 24))\" y2=\"52\" stroke=\"#1f77b4\" stroke-width=\"2.5\"/>"
        s += "<text x=\"\(f(lx + 30))\" y=\"56\">training loss</text>"
        if !validation.isEmpty {
            s += "<line x1=\"\(f(lx))\" y1=\"70\" x2=\"\(f(lx + 24))\" y2=\"70\" stroke=\"#d62728\" stroke-width=\"2\"/>"
            s += "<text x=\"\(f(lx + 30))\" y=\"74\">validation loss</text>"
        }
        s += "</g>\n</svg>\n"
        return s
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

    private static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
