import Foundation
import MeshCore
import PresenceProtocol

/// A decoded client request.
enum ClientRequest: Equatable {
    case subscribe(UserSelection)
    case unsubscribe(UserSelection)
    case query(UserSelection)
    case setStatus(CustomStatusValue)
}

/// Why a client message cannot be served: sent back as an `error` event.
struct RequestError: Error, Equatable {
    var code: String
    var message: String
    /// The request's `id`, when it could be read.
    var requestID: String?
}

/// Decodes and validates client messages, naming the field at fault in every error.
enum ClientRequestDecoder {
    static let statusValues = ["online", "away", "busy"]
    static let maxStatusTextBytes = 256

    static func decode(_ bytes: [UInt8], maxUsers: Int) -> Result<(request: ClientRequest, id: String?), RequestError> {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])
        } catch {
            return .failure(RequestError(code: "invalid_json", message: "message is not valid JSON", requestID: nil))
        }
        guard let object = parsed as? [String: Any] else {
            return .failure(RequestError(code: "invalid_message", message: "message must be a JSON object with \"type\" and \"payload\"", requestID: nil))
        }
        var requestID: String?
        if let rawID = object["id"], !(rawID is NSNull) {
            guard let text = rawID as? String else {
                return .failure(RequestError(code: "invalid_message", message: "\"id\" must be a string", requestID: nil))
            }
            requestID = text
        }
        func failure(_ code: String, _ message: String) -> Result<(request: ClientRequest, id: String?), RequestError> {
            .failure(RequestError(code: code, message: message, requestID: requestID))
        }
        guard let type = object["type"] as? String else {
            return failure("invalid_message", "\"type\" is missing or not a string")
        }
        let knownTypes = [ClientRequestType.subscribe, ClientRequestType.unsubscribe, ClientRequestType.query, ClientRequestType.set]
        guard knownTypes.contains(type) else {
            return failure("unknown_type", "unknown message type \"\(type)\"; expected one of \(knownTypes.joined(separator: ", "))")
        }
        guard let payload = object["payload"] as? [String: Any] else {
            return failure("invalid_payload", "\"payload\" is missing or not an object")
        }
        switch type {
        case ClientRequestType.set:
            return decodeStatus(payload).map { (.setStatus($0), requestID) }.mapError {
                RequestError(code: $0.code, message: $0.message, requestID: requestID)
            }
        default:
            switch decodeSelection(payload, maxUsers: maxUsers) {
            case .failure(let error):
                return failure(error.code, error.message)
            case .success(let selection):
                switch type {
                case ClientRequestType.subscribe: return .success((.subscribe(selection), requestID))
                case ClientRequestType.unsubscribe: return .success((.unsubscribe(selection), requestID))
                default: return .success((.query(selection), requestID))
                }
            }
        }
    }

    /// Reads `userIds`: an array of valid user IDs or `"*"`.
    static func decodeSelection(_ payload: [String: Any], maxUsers: Int) -> Result<UserSelection, RequestError> {
        guard let raw = payload["userIds"] else {
            return .failure(RequestError(code: "invalid_payload", message: "payload.userIds is missing; send an array of user IDs or \"*\""))
        }
        if let text = raw as? String {
            guard text == "*" else {
                return .failure(RequestError(code: "invalid_payload", message: "payload.userIds must be an array of user IDs or \"*\", got \"\(text)\""))
            }
            return .success(.all)
        }
        guard let list = raw as? [Any] else {
            return .failure(RequestError(code: "invalid_payload", message: "payload.userIds must be an array of user IDs or \"*\""))
        }
        guard list.count <= maxUsers else {
            return .failure(RequestError(code: "too_many_users", message: "payload.userIds contains \(list.count) IDs; the maximum is \(maxUsers)"))
        }
        var ids: [String] = []
        ids.reserveCapacity(list.count)
        for (index, element) in list.enumerated() {
            guard let id = element as? String else {
                return .failure(RequestError(code: "invalid_payload", message: "payload.userIds[\(index)] must be a string"))
            }
            if let problem = UserIDRules.validationError(id) {
                return .failure(RequestError(code: "invalid_user_id", message: "payload.userIds[\(index)]: \(problem)"))
            }
            ids.append(id)
        }
        return .success(.users(ids))
    }

    static func decodeStatus(_ payload: [String: Any]) -> Result<CustomStatusValue, RequestError> {
        guard let status = payload["status"] as? String else {
            return .failure(RequestError(code: "invalid_payload", message: "payload.status is missing or not a string; expected one of \(statusValues.joined(separator: ", "))"))
        }
        guard statusValues.contains(status) else {
            return .failure(RequestError(code: "invalid_payload", message: "payload.status must be one of \(statusValues.joined(separator: ", ")), got \"\(status)\""))
        }
        var text: String?
        if let raw = payload["text"], !(raw is NSNull) {
            guard let value = raw as? String else {
                return .failure(RequestError(code: "invalid_payload", message: "payload.text must be a string"))
            }
            guard value.utf8.count <= maxStatusTextBytes else {
                return .failure(RequestError(code: "invalid_payload", message: "payload.text is \(value.utf8.count) bytes; the limit is \(maxStatusTextBytes)"))
            }
            text = value
        }
        return .success(CustomStatusValue(status: status, text: text))
    }
}
