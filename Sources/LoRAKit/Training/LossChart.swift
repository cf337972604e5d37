import Foundation

/// Loss curves on one pair of axes as a self-contained SVG image: steps across, loss up, gridlines
/// at round values, one legend row per labelled series (a run's loss.svg, `lora compare`'s compare.svg).
public struct LossChart: Sendable {
    public struct Series: Sendable {
        /// Shown in the legend; nil for none.
        public var label: String?
        public var points: [TrainingHistory.Point]
        public var color: String
        public var width: Double
        /// Whether each point gets a dot as well as the line.
        public var dots: Bool

        public init(label: String?, points: [TrainingHistory.Point], color: String, width: Double, dots: Bool = false) {
            self.label = label
            self.points = points
            self.color = color
            self.width = width
            self.dots = dots
        }
    }

    public var title: String
    public var series: [Series] = []

    public init(title: String, series: [Series] = []) {
        self.title = title
        self.series = series
    }

    /// Ten distinct colours (matplotlib's tab10), for series that need one each.
    public static let palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

    public func svg() -> String {
        let width = 720.0, height = 420.0, left = 60.0, right = 20.0, top = 40.0, bottom = 50.0
        let all = series.flatMap(\.points)
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
        func polyline(_ points: [TrainingHistory.Point], _ style: String) -> String {
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
        for line in series {
            s += polyline(line.points, "stroke=\"\(line.color)\" stroke-width=\"\(line.width)\"")
            if line.dots {
                for p in line.points where p.loss.isFinite {
                    s += "<circle cx=\"\(f(x(Double(p.step))))\" cy=\"\(f(y(p.loss)))\" r=\"3.5\" fill=\"\(line.color)\"/>\n"
                }
            }
        }
        // Legend, one row per labelled series.
        let lx = width - right - 170
        s += "<g>"
        for (i, line) in series.filter({ $0.label != nil }).enumerated() {
            let ly = 52.0 + 18 * Double(i)
            s += "<line x1=\"\(f(lx))\" y1=\"\(f(ly))\" x2=\"\(f(lx + 24))\" y2=\"\(f(ly))\" stroke=\"\(line.color)\" stroke-width=\"\(line.width)\"/>"
            s += "<text x=\"\(f(lx + 30))\" y=\"\(f(ly + 4))\">\(Self.escaped(line.label!))</text>"
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

    private static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;")
    }
}
