import CCrypto
import Foundation

/// Verification of JSON Web Tokens signed with HMAC-SHA256 (RFC 7519, RFC 7515).
enum JWT {
    struct Problem: Error, Equatable {
        var message: String
    }

    /// Returns the `sub` claim of `token` when its signature matches one of `secrets`, its header
    /// names HS256, it has an `exp`, and `exp`/`nbf` (seconds since 1970) admit `nowSeconds`.
    static func verifyHS256(_ token: String, secrets: [String], nowSeconds: Int64) -> Result<String, Problem> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return .failure(Problem(message: "a JWT has three dot-separated parts")) }
        guard let headerBytes = base64URLDecode(parts[0]),
            let header = try? JSONSerialization.jsonObject(with: Data(headerBytes)) as? [String: Any]
        else { return .failure(Problem(message: "header is not base64url-encoded JSON")) }
        guard header["alg"] as? String == "HS256" else {
            return .failure(Problem(message: "alg must be HS256"))
        }

        guard let signature = base64URLDecode(parts[2]) else {
            return .failure(Problem(message: "signature is not base64url"))
        }
        let signedPart = Array("\(parts[0]).\(parts[1])".utf8)
        guard secrets.contains(where: { constantTimeEqual(hmacSHA256(key: Array($0.utf8), message: signedPart), signature) }) else {
            return .failure(Problem(message: "signature does not match any configured secret"))
        }

        guard let claimBytes = base64URLDecode(parts[1]),
            let claims = try? JSONSerialization.jsonObject(with: Data(claimBytes)) as? [String: Any]
        else { return .failure(Problem(message: "payload is not base64url-encoded JSON")) }
        // A token without an expiry would stay valid forever once leaked, so `exp` is required.
        guard let exp = claims["exp"] else {
            return .failure(Problem(message: "exp claim is missing; tokens must carry an expiry time"))
        }
        guard let expiry = (exp as? NSNumber)?.int64Value, !isJSONBoolean(exp) else {
            return .failure(Problem(message: "exp must be a number"))
        }
        guard nowSeconds < expiry else { return .failure(Problem(message: "token expired")) }

        if let nbf = claims["nbf"] {
            guard let seconds = (nbf as? NSNumber)?.int64Value, !isJSONBoolean(nbf) else {
                return .failure(Problem(message: "nbf must be a number"))
            }
            guard nowSeconds >= seconds else { return .failure(Problem(message: "token not valid yet (nbf)")) }
        }
        guard let subject = claims["sub"] as? String else {
            return .failure(Problem(message: "sub claim is missing or not a string"))
        }
        return .success(subject)
    }

    static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        _ = HMAC(EVP_sha256(), key, Int32(key.count), message, message.count, &digest, &length)
        return Array(digest.prefix(Int(length)))
    }

    static func base64URLEncode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func base64URLDecode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64).map(Array.init)
    }

    private static func constantTimeEqual(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
        guard lhs.count == rhs.count else { return false }
        var difference: UInt8 = 0
        for index in lhs.indices { difference |= lhs[index] ^ rhs[index] }
        return difference == 0
    }
}
