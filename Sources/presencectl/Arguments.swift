// Command-line parsing for presencectl. Outside packages such as swift-argument-parser cannot be
// fetched in this project, so this is a small parser of its own: long options with a value
// (`--nodes 3` or `--nodes=3`), flags without one, and positional arguments.

/// One option that a command accepts, as its usage text lists it.
struct OptionSpec: Sendable {
    /// Name with its leading dashes, such as `--nodes`.
    let name: String
    /// Placeholder for the value in usage text, such as `N`; nil for a flag that takes no value.
    let valueName: String?
    /// Help text: the setting the option changes, with its unit and default.
    let help: String

    init(_ name: String, value valueName: String? = nil, help: String) {
        self.name = name
        self.valueName = valueName
        self.help = help
    }
}

/// Synopsis, summary and options of one command, used both to parse and to print usage.
struct CommandSpec: Sendable {
    /// Words after `presencectl`, such as `cluster up`.
    let name: String
    /// Arguments after the name in the synopsis, such as `NODE [--signal SIGNAL]`.
    let synopsis: String
    let summary: String
    let options: [OptionSpec]

    /// Usage text: the synopsis line, the summary and one line per option.
    var usage: String {
        var lines = ["Usage: presencectl \(name) \(synopsis)", ""]
        lines.append(contentsOf: wrap(summary, width: 96, indent: ""))
        if !options.isEmpty {
            lines.append("")
            lines.append("Options:")
            lines.append(contentsOf: Self.optionLines(options, indent: "  "))
        }
        return lines.joined(separator: "\n")
    }

    /// Option lines with the help text aligned in one column.
    static func optionLines(_ options: [OptionSpec], indent: String) -> [String] {
        let labels = options.map { option in
            option.valueName.map { "\(option.name) \($0)" } ?? option.name
        }
        let width = labels.map(\.count).max() ?? 0
        return zip(labels, options).map { label, option in
            indent + label.padding(toLength: width + 2, withPad: " ", startingAt: 0) + option.help
        }
    }
}

/// A mistake in the command line. `main.swift` prints it to stderr and exits with status 2.
struct UsageError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Options and positional arguments of one command line, checked against the command's specs.
struct ParsedArguments {
    private(set) var positionals: [String] = []
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    private let command: String

    /// True when `--help` or `-h` was given; the caller prints usage and ignores everything else.
    private(set) var helpRequested = false

    /// Parses `arguments` (without the command words). Throws `UsageError` for an unknown option,
    /// a missing value or a value given to a flag. Everything after `--` is positional.
    init(_ arguments: [String], for command: CommandSpec) throws {
        self.command = command.name
        var index = 0
        var optionsEnded = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1

            if optionsEnded || !argument.hasPrefix("-") || argument == "-" {
                positionals.append(argument)
                continue
            }
            if argument == "--" {
                optionsEnded = true
                continue
            }
            if argument == "--help" || argument == "-h" {
                helpRequested = true
                continue
            }

            let name: String
            var inlineValue: String?
            if let equals = argument.firstIndex(of: "=") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            } else {
                name = argument
            }

            guard let spec = command.options.first(where: { $0.name == name }) else {
                throw UsageError(
                    "unknown option '\(name)' for 'presencectl \(command.name)'; "
                        + "run 'presencectl help \(command.name)' to list its options")
            }

            guard let valueName = spec.valueName else {
                if inlineValue != nil {
                    throw UsageError("option \(name) takes no value, got '\(argument)'")
                }
                flags.insert(name)
                continue
            }

            if inlineValue == nil {
                guard index < arguments.count else {
                    throw UsageError("option \(name) requires a value \(valueName)")
                }
                inlineValue = arguments[index]
                index += 1
            }
            values[name, default: []].append(inlineValue!)
        }
    }

    /// Returns the last value given for `name`, or nil when the option is absent.
    func value(_ name: String) -> String? {
        values[name]?.last
    }

    /// Returns every value given for a repeatable option, in command-line order.
    func allValues(_ name: String) -> [String] {
        values[name] ?? []
    }

    /// True when the option was given, with or without a value.
    func contains(_ name: String) -> Bool {
        flags.contains(name) || values[name] != nil
    }

    /// Parses the value of `name` as an integer within `range`; returns nil when the option is absent.
    func integer(_ name: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let text = value(name) else { return nil }
        guard let number = Int(text), range.contains(number) else {
            throw UsageError(
                "invalid value '\(text)' for \(name): expected an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    /// Parses the value of `name` as seconds above zero and at most `maximum`; returns nil when the
    /// option is absent.
    func seconds(_ name: String, maximum: Double) throws -> Duration? {
        guard let text = value(name) else { return nil }
        guard let number = Double(text), number > 0, number <= maximum else {
            throw UsageError("invalid value '\(text)' for \(name): expected seconds above 0 and at most \(Int(maximum))")
        }
        return .milliseconds(Int64((number * 1000).rounded()))
    }

    /// Checks that exactly `names.count` positional arguments were given and returns them.
    func requirePositionals(_ names: [String]) throws -> [String] {
        if positionals.count < names.count {
            let missing = names[positionals.count...].joined(separator: " ")
            throw UsageError("missing \(missing) for 'presencectl \(command)'")
        }
        if positionals.count > names.count {
            let extra = positionals[names.count...].map { "'\($0)'" }.joined(separator: " ")
            throw UsageError("unexpected argument \(extra) for 'presencectl \(command)'")
        }
        return positionals
    }
}

/// Splits `text` into lines of at most `width` characters at spaces, each starting with `indent`.
/// A word longer than the width gets a line of its own.
func wrap(_ text: String, width: Int, indent: String) -> [String] {
    var lines: [String] = []
    var line = indent
    for word in text.split(separator: " ") {
        if line.count > indent.count && line.count + 1 + word.count > width {
            lines.append(line)
            line = indent
        }
        line += (line.count > indent.count ? " " : "") + word
    }
    if line.count > indent.count { lines.append(line) }
    return lines
}

/// The outcome of reading a command's arguments.
enum ParsedCommand<Options> {
    case run(Options)
    /// Help was printed or the arguments were invalid: exit with this status.
    case exit(Int32)
}

extension CommandSpec {
    /// Parses `arguments` and builds the command's options with `makeOptions`. For `--help` it
    /// prints the usage and returns `.exit(0)`; for invalid arguments it prints the error and
    /// returns `.exit(2)`.
    func parseOptions<Options>(_ arguments: [String], _ makeOptions: (ParsedArguments) throws -> Options) -> ParsedCommand<Options> {
        do {
            let parsed = try ParsedArguments(arguments, for: self)
            if parsed.helpRequested {
                print(usage)
                return .exit(0)
            }
            return .run(try makeOptions(parsed))
        } catch {
            printError("\(error)")
            return .exit(2)
        }
    }
}
