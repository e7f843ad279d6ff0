import Foundation

/// `--name value` options of one subcommand, checked against the names it accepts.
struct Options {
    private var values: [String: String] = [:]

    init(_ arguments: [String], accepted: [String]) throws {
        var index = 0
        while index < arguments.count {
            let name = arguments[index]
            guard name.hasPrefix("--"), accepted.contains(name) else {
                throw BenchError("unknown option \(name); accepted: \(accepted.joined(separator: " "))")
            }
            guard index + 1 < arguments.count else { throw BenchError("option \(name) is missing its value") }
            values[name] = arguments[index + 1]
            index += 2
        }
    }

    func string(_ name: String) -> String? { values[name] }

    func integer(_ name: String, default value: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text = values[name] else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw BenchError("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound), got \(text)")
        }
        return number
    }

    func integers(_ name: String, default value: [Int], in range: ClosedRange<Int>) throws -> [Int] {
        guard let text = values[name] else { return value }
        let numbers = text.split(separator: ",").map { Int($0) }
        guard !numbers.isEmpty, numbers.allSatisfy({ $0 != nil && range.contains($0!) }) else {
            throw BenchError("\(name) must be a comma-separated list of integers from \(range.lowerBound) to \(range.upperBound), got \(text)")
        }
        return numbers.map { $0! }
    }
}

/// The command line as typed, for the results page.
var commandLineText: String {
    (["presence-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
}
