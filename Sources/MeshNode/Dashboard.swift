/// The page served at `GET /`: cluster members and online users, live over the node's own
/// WebSocket as an observer session, so watching does not make anyone online.
enum Dashboard {
    static let html = #"""
    <!doctype html>
    <html lang="en"><head><meta charset="utf-8"><title>PresenceMesh node</title>
    <style>
    body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
    table{border-collapse:collapse;margin-bottom:2rem}td,th{padding:.3rem .8rem;border-bottom:1px solid #ddd;text-align:left}
    .dot{display:inline-block;width:.7rem;height:.7rem;border-radius:50%;margin-right:.4rem}
    .online{background:#2ecc40}.offline{background:#aaa}.alive{color:#2a2}.suspect{color:#c80}.dead,.left{color:#c22}
    #status{color:#666}
    </style></head><body>
    <h1>PresenceMesh <span id="node"></span></h1><p id="status">connecting…</p>
    <h2>Members</h2><table><thead><tr><th>name</th><th>state</th><th>incarnation</th><th>gossip</th><th>client</th></tr></thead><tbody id="members"></tbody></table>
    <h2>Users (<span id="count">0</span> online)</h2><table><thead><tr><th>user</th><th>status</th><th>last seen</th></tr></thead><tbody id="users"></tbody></table>
    <script>
    const users = new Map();
    // With token authentication on, open the page as /?token=JWT; the token is sent with every request.
    const token = new URLSearchParams(location.search).get("token");
    const text = (value) => document.createTextNode(value == null ? "" : String(value));
    function row(cells) { const tr = document.createElement("tr"); for (const cell of cells) { const td = document.createElement("td"); td.append(cell); tr.append(td); } return tr; }
    function renderUsers() {
      const body = document.getElementById("users"); body.replaceChildren();
      const ids = [...users.keys()].sort();
      for (const id of ids) {
        const u = users.get(id); const dot = document.createElement("span"); dot.className = "dot " + u.status;
        const label = document.createElement("span"); label.append(dot, text(u.status + (u.custom ? " (" + u.custom.status + (u.custom.text ? ": " + u.custom.text : "") + ")" : "")));
        body.append(row([text(id), label, text(u.lastSeen || "")]));
      }
      document.getElementById("count").textContent = ids.filter((id) => users.get(id).status === "online").length;
    }
    async function refreshMembers() {
      try {
        const response = await fetch("/v1/cluster/members", token ? {headers: {Authorization: "Bearer " + token}} : {});
        if (response.status === 401) { document.getElementById("status").textContent = "this node requires a token: open this page as /?token=JWT"; return; }
        const members = await response.json();
        const body = document.getElementById("members"); body.replaceChildren();
        for (const m of members) { const state = document.createElement("span"); state.className = m.state; state.append(text(m.state)); body.append(row([text(m.name), state, text(m.incarnation), text(m.gossipAddr), text(m.clientAddr)])); }
      } catch (error) { document.getElementById("status").textContent = "members unavailable: " + error; }
    }
    function connect() {
      const socket = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws?observe=true&" + (token ? "token=" + encodeURIComponent(token) : "userId=dashboard"));
      socket.onopen = () => socket.send(JSON.stringify({type: "presence.subscribe", id: "all", payload: {userIds: "*"}}));
      socket.onmessage = (message) => {
        const event = JSON.parse(message.data);
        if (event.type === "session.ready") { document.getElementById("node").textContent = event.payload.node; document.getElementById("status").textContent = "live"; }
        else if (event.type === "presence.snapshot") { for (const u of event.payload.users) users.set(u.userId, u); renderUsers(); }
        else if (event.type === "user.presence") { users.set(event.payload.userId, event.payload); renderUsers(); }
        else if (event.type === "error") { document.getElementById("status").textContent = "users unavailable: " + event.payload.code + ": " + event.payload.message; }
      };
      socket.onclose = () => { document.getElementById("status").textContent = "disconnected, retrying…"; setTimeout(connect, 1000); };
    }
    refreshMembers(); setInterval(refreshMembers, 1000); connect();
    </script></body></html>
    """#
}
