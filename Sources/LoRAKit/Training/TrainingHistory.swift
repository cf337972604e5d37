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
        if lo < 0 && losses.allSatisfy({ $0 >= 0 }) { lo = 0 }  // a loss is never negative: keep the axis at 0
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
        // Axes, with gridlines and labels at round values.
        s += "<g stroke=\"#999\"><line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(height - bottom))\"/>"
        s += "<line x1=\"\(f(left))\" y1=\"\(f(height - bottom))\" x2=\"\(f(width - right))\" y2=\"\(f(height - bottom))\"/></g>\n"
        for loss in Self.roundTicks(lo, hi) {
            s += "<line x1=\"\(f(left))\" y1=\"\(f(y(loss)))\" x2=\"\(f(width - right))\" y2=\"\(f(y(loss)))\" stroke=\"#eee\"/>\n"
            s += "<text x=\"\(f(left - 6))\" y=\"\(f(y(loss) + 4))\" text-anchor=\"end\">\(String(format: "%g", loss))</text>\n"
        }
        for step in Self.roundTicks(x0, x1) {
            s += "<text x=\"\(f(x(Int(step))))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\">\(Int(step))</text>\n"
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

    /// Two to seven values in [lo, hi] at multiples of 1, 2 or 5 × 10^k, spaced at least 0.7 × a quarter of the range.
    static func roundTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let rough = (hi - lo) / 4, magnitude = pow(10, floor(log10(rough)))
        let spacing = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough * 0.7 }!
        let first = (lo / spacing).rounded(.up)
        return stride(from: first, through: hi / spacing + 1e-9, by: 1).map { ($0 * spacing * 1e9).rounded() / 1e9 }
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
