// Placeholder until the client SDK lands.
