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
        // Spans are taken as halves, hi/2 − lo/2, so that losses near ±Double.greatestFiniteMagnitude
        // (a diverged run) give a finite axis instead of an infinite or empty one.
        func widened(_ v: Double, by d: Double) -> Double { min(max(v + d, -.greatestFiniteMagnitude), .greatestFiniteMagnitude) }
        if hi / 2 - lo / 2 < 0.5e-9 {
            let half = max(0.5, max(abs(lo), abs(hi)) * 1e-6)
            lo = widened(lo, by: -half); hi = widened(hi, by: half)
        }
        let pad = (hi / 2 - lo / 2) * 0.1
        lo = widened(lo, by: -pad); hi = widened(hi, by: pad)
        if lo < 0 && losses.allSatisfy({ $0 >= 0 }) { lo = 0 }  // a loss is never negative: keep the axis at 0
        let x0 = Double(first), x1 = last > first ? Double(last) : Double(first) + 1
        func x(_ step: Double) -> Double { left + (step - x0) / (x1 - x0) * (width - left - right) }
        func y(_ loss: Double) -> Double { top + (hi / 2 - loss / 2) / (hi / 2 - lo / 2) * (height - top - bottom) }
        func f(_ v: Double) -> String { String(format: "%.1f", v) }
        func polyline(_ points: [Point], _ style: String) -> String {
            let coordinates = points.filter { $0.loss.isFinite }.map { "\(f(x(Double($0.step)))),\(f(y($0.loss)))" }.joined(separator: " ")
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
            s += "<text x=\"\(f(x(step)))\" y=\"\(f(height - bottom + 18))\" text-anchor=\"middle\">\(String(format: "%.0f", step))</text>\n"
        }
        s += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - 10))\" text-anchor=\"middle\">step</text>\n"
        if !train.isEmpty {
            s += polyline(train, "stroke=\"#9ecae1\" stroke-width=\"1\"")
            s += polyline(movingAverage(train, window: max(1, train.count / 25)), "stroke=\"#1f77b4\" stroke-width=\"2.5\"")
        }
        if !validation.isEmpty {
            s += polyline(validation, "stroke=\"#d62728\" stroke-width=\"2\"")
            for p in validation where p.loss.isFinite {
                s += "<circle cx=\"\(f(x(Double(p.step))))\" cy=\"\(f(y(p.loss)))\" r=\"3.5\" fill=\"#d62728\"/>\n"
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

    /// Two to seven values in [lo, hi] at multiples of 1, 2 or 5 × 10^k, spaced at least 0.7 × a quarter of the range;
    /// none when the range is empty or not finite, and at most eight whatever the magnitudes (a tick that
    /// adding 1 to cannot move, as at 1e300 ± 1e280, would otherwise repeat forever).
    static func roundTicks(_ lo: Double, _ hi: Double) -> [Double] {
        let rough = hi / 4 - lo / 4
        guard rough.isNormal, rough > 0 else { return [] }
        let magnitude = pow(10, floor(log10(rough)))
        guard magnitude.isNormal, let spacing = [1.0, 2, 5, 10].map({ $0 * magnitude }).first(where: { $0 >= rough * 0.7 }) else {
            return []
        }
        let first = (lo / spacing).rounded(.up), last = hi / spacing + 1e-9
        guard first.isFinite, last.isFinite else { return [] }
        var ticks: [Double] = []
        for i in 0..<8 where first + Double(i) <= last {
            let v = (first + Double(i)) * spacing
            // Rounding to 1e-9 clears float noise (0.30000000000000004); large values have none to clear.
            let tick = abs(v) < 1e6 ? (v * 1e9).rounded() / 1e9 : v
            if ticks.last != tick { ticks.append(tick) }
        }
        return ticks
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
