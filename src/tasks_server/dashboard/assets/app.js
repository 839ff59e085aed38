// The Tasks Server dashboard: one ES module, no build step, no dependency.
// It reads the server's own JSON API. The owner's id and key stay in this tab's
// sessionStorage: never in a URL, a cookie or a log. Every value from the server is
// put in the page as text (textContent), never as HTML.

const SESSION = { owner: "tasks.ownerId", key: "tasks.key", admin: "tasks.adminToken" };
const STATES = ["RUNNING", "PAUSED", "SUCCESS", "ERROR", "REVOKED"];
const ORDERS = { createdAt: "Created", estimateExecutionAt: "Due", estimateEndAt: "Ended" };
const PAGE = 50;
// time filters: URL parameter (ms, as the API takes it) -> label
const RANGES = { createdFrom: "Created from", createdTo: "Created before", dueFrom: "Due from", dueTo: "Due before" };

// ---- the page ----

function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    // through the CSSOM: the page's Content-Security-Policy refuses style attributes
    else if (name === "style") Object.assign(element.style, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

const view = () => document.getElementById("view");

function show(...children) {
  view().replaceChildren(...children.filter((child) => child !== null && child !== undefined));
}

function alertText(text) {
  const box = document.getElementById("alert");
  box.textContent = text || "";
  box.hidden = !text;
}

function time(ms) {
  if (!ms) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function localTime(ms) {
  // the value a datetime-local input shows: local time, to the second
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return date.toISOString().slice(0, 19);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 1000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// ---- the API ----

class ApiError extends Error {
  constructor(status, body) {
    const fields = body && body.fields ? Object.entries(body.fields).map(([k, v]) => `${k}: ${v}`) : [];
    super([body && body.message ? body.message : `HTTP ${status}`, ...fields].join(" — "));
    this.status = status;
  }
}

async function api(path, { method = "GET", body, admin = false } = {}) {
  const headers = { Accept: "application/json" };
  if (admin) {
    headers.Authorization = `Bearer ${sessionStorage.getItem(SESSION.admin) || ""}`;
  } else {
    headers.Authorization = `Bearer ${sessionStorage.getItem(SESSION.key) || ""}`;
    headers["X-Tasks-Owner-Id"] = sessionStorage.getItem(SESSION.owner) || "";
  }
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const found = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, found);
  return found;
}

const signedIn = () => Boolean(sessionStorage.getItem(SESSION.owner));

// ---- routes: #/path?query ----

function route() {
  const [path, query = ""] = location.hash.replace(/^#/, "").split("?");
  return { path: path || "/tasks", params: new URLSearchParams(query) };
}

function go(path, params) {
  const query = params ? new URLSearchParams([...params].filter(([, v]) => v)).toString() : "";
  location.hash = query ? `${path}?${query}` : path;
}

async function render() {
  const { path, params } = route();
  document.getElementById("nav").hidden = !signedIn();
  if (!signedIn() && path !== "/signin") return go("/signin");
  alertText("");
  try {
    if (path === "/signin") return signInPage();
    if (path === "/tasks") return await tasksPage(params);
    if (path.startsWith("/tasks/")) return await taskPage(decodeURIComponent(path.slice(7)));
    if (path === "/activity") return await activityPage();
    if (path === "/operator") return await operatorPage();
    show(h("p", {}, "No such page."));
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403) && !path.startsWith("/operator")) {
      signOut();
      alertText(`Signed out: ${error.message}`);
      return;
    }
    alertText(error.message);
  }
}

// ---- sign in ----

function signInPage() {
  const owner = h("input", { id: "owner-id", name: "owner-id", autocomplete: "username", required: true, spellcheck: "false" });
  const key = h("input", { id: "key", name: "key", type: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    { class: "card", onsubmit: (event) => signIn(event, owner.value.trim(), key.value.trim()) },
    h("h1", {}, "Sign in"),
    h("p", {}, "Your owner id and key, as POST /v1/owners/register gave them. They stay in this tab."),
    h("label", { for: "owner-id" }, "Owner ID"),
    owner,
    h("label", { for: "key" }, "Key"),
    key,
    h("button", { type: "submit" }, "Sign in"),
  );
  show(form);
  owner.focus();
}

async function signIn(event, owner, key) {
  event.preventDefault();
  sessionStorage.setItem(SESSION.owner, owner);
  sessionStorage.setItem(SESSION.key, key);
  try {
    await api("/v1/queues/stats");
  } catch (error) {
    sessionStorage.removeItem(SESSION.owner);
    sessionStorage.removeItem(SESSION.key);
    alertText(`Not signed in: ${error.message}`);
    return;
  }
  go("/tasks");
}

function signOut() {
  for (const name of Object.values(SESSION)) sessionStorage.removeItem(name);
  go("/signin");
}

// ---- tasks ----

async function tasksPage(params) {
  const wanted = params.get("id");
  if (wanted) return go(`/tasks/${encodeURIComponent(wanted.trim().toUpperCase())}`);
  const state = params.get("state") || "";
  const order = ORDERS[params.get("order")] ? params.get("order") : "createdAt";
  const sort = params.get("sort") === "asc" ? "asc" : "desc";
  const after = params.get("after") || "";
  const query = new URLSearchParams({ limit: String(PAGE + 1), order, sort });
  if (state) query.set("state", state);
  const ranges = {};
  for (const name of Object.keys(RANGES)) {
    if (/^\d+$/.test(params.get(name) || "")) ranges[name] = params.get(name);
  }
  for (const [name, value] of Object.entries(ranges)) query.set(name, value);
  const host = (params.get("host") || "").trim();
  if (host) query.set("host", host);
  if (after) query.set("after", after);
  const [counts, found] = await Promise.all([api("/v1/queues/stats"), api(`/v1/queues?${query}`)]);
  const tasks = found.slice(0, PAGE);
  const more = found.length > PAGE;

  const filters = new URLSearchParams({ state, order, sort, host, ...ranges });
  for (const [name, value] of [...filters]) if (!value) filters.delete(name);
  const countsBar = h(
    "ul",
    { class: "counts", "aria-label": "Counts" },
    STATES.map((name) =>
      h("li", {}, h("a", { href: `#/tasks?${new URLSearchParams({ ...Object.fromEntries(filters), state: name })}`, "data-state": name }, name, " ", h("strong", {}, counts[name]))),
    ),
  );
  const stateSelect = h("select", { id: "filter-state", name: "state" }, h("option", { value: "" }, "Any state"), STATES.map((name) => h("option", { value: name, selected: name === state }, name)));
  const orderSelect = h("select", { id: "filter-order", name: "order" }, Object.entries(ORDERS).map(([value, label]) => h("option", { value, selected: value === order }, label)));
  const sortSelect = h("select", { id: "filter-sort", name: "sort" }, h("option", { value: "desc", selected: sort === "desc" }, "Newest first"), h("option", { value: "asc", selected: sort === "asc" }, "Oldest first"));
  const idInput = h("input", { id: "filter-id", name: "id", placeholder: "01J…", spellcheck: "false" });
  const hostInput = h("input", { id: "filter-host", name: "host", placeholder: "hooks.example.com", spellcheck: "false", value: host });
  // in the browser's time zone on screen, ms since the epoch in the URL
  const rangeInputs = Object.fromEntries(
    Object.keys(RANGES).map((name) => [
      name,
      h("input", { id: `filter-${name}`, type: "datetime-local", step: "1", value: ranges[name] ? localTime(Number(ranges[name])) : "" }),
    ]),
  );
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (event) => {
        event.preventDefault();
        const chosen = Object.fromEntries(
          Object.entries(rangeInputs).map(([name, input]) => [name, input.value ? String(new Date(input.value).getTime()) : ""]),
        );
        go("/tasks", new URLSearchParams({ state: stateSelect.value, order: orderSelect.value, sort: sortSelect.value, host: hostInput.value.trim(), id: idInput.value, ...chosen }));
      },
    },
    h("label", { for: "filter-state" }, "State"), stateSelect,
    h("label", { for: "filter-order" }, "Order by"), orderSelect,
    h("label", { for: "filter-sort" }, "Sort"), sortSelect,
    h("label", { for: "filter-host" }, "Target host"), hostInput,
    h("label", { for: "filter-id" }, "Task id"), idInput,
    Object.entries(RANGES).map(([name, label]) => [h("label", { for: `filter-${name}` }, label), rangeInputs[name]]),
    h("button", { type: "submit" }, "Apply"),
  );
  const table = h(
    "table",
    { class: "tasks" },
    h("thead", {}, h("tr", {}, ["Task", "State", "Created", "Next attempt", "Attempts", "Status", "Error"].map((name) => h("th", { scope: "col" }, name)))),
    h(
      "tbody",
      {},
      tasks.map((task) =>
        h(
          "tr",
          { "data-task-id": task.id },
          h("td", {}, h("a", { href: `#/tasks/${task.id}` }, task.id)),
          h("td", {}, h("span", { class: `state ${task.state}` }, task.state)),
          h("td", {}, time(task.createdAt)),
          h("td", {}, task.state === "RUNNING" ? time(task.estimateNextRetryAt || task.estimateExecutionAt) : "–"),
          h("td", {}, task.attempts),
          h("td", {}, task.statusCode || "–"),
          h("td", { class: "error" }, task.error || ""),
        ),
      ),
    ),
  );
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    after ? h("a", { href: `#/tasks?${filters}` }, "First page") : null,
    more ? h("a", { href: `#/tasks?${new URLSearchParams({ ...Object.fromEntries(filters), after: tasks[tasks.length - 1].id })}`, rel: "next" }, "Next page") : null,
  );
  show(
    h("h1", {}, "Tasks"),
    countsBar,
    form,
    tasks.length ? table : h("p", { class: "empty" }, "No tasks here."),
    pager,
  );
}

// ---- one task ----

async function taskPage(id) {
  const base = `/v1/queues/${encodeURIComponent(id)}`;
  const [task, config, attempts] = await Promise.all([api(base), api(`${base}/config`), api(`${base}/attempts?limit=100`)]);
  const act = (label, method, suffix, body, confirmText) =>
    h(
      "button",
      {
        type: "button",
        "data-action": label.toLowerCase(),
        onclick: async () => {
          if (!window.confirm(confirmText)) return;
          try {
            await api(`${base}${suffix}`, { method, body });
            if (method === "DELETE") return go("/tasks");
            await render();
            alertText("");
          } catch (error) {
            alertText(error.message);
          }
        },
      },
      label,
    );
  const delay = h("input", { id: "edit-delay", type: "number", min: "0", step: "1000", value: "60000" });
  const actions = h(
    "div",
    { class: "actions" },
    task.state === "RUNNING" ? act("Pause", "PATCH", "/pause", undefined, `Pause task ${id}? A request in flight is aborted.`) : null,
    task.state === "PAUSED" ? act("Resume", "PATCH", "/resume", undefined, `Resume task ${id}?`) : null,
    task.state === "RUNNING" || task.state === "PAUSED" ? act("Revoke", "PATCH", "/revoke", undefined, `Revoke task ${id}? It will not run again.`) : null,
    task.state === "RUNNING" ? act("Execute", "POST", "/execute", undefined, `Run task ${id} now?`) : null,
    act("Delete", "DELETE", "", undefined, `Delete task ${id} and its history?`),
  );
  const edit =
    task.state === "RUNNING" || task.state === "PAUSED"
      ? h(
          "form",
          {
            class: "edit",
            onsubmit: async (event) => {
              event.preventDefault();
              if (!window.confirm(`Set the delay of task ${id} to ${delay.value} ms from now?`)) return;
              try {
                await api(base, { method: "PATCH", body: { config: { executionDelay: Number(delay.value) } } });
                await render();
              } catch (error) {
                alertText(error.message);
              }
            },
          },
          h("label", { for: "edit-delay" }, "Delay (ms from now)"),
          delay,
          h("button", { type: "submit", "data-action": "edit-delay" }, "Edit delay"),
        )
      : null;
  const facts = [
    ["State", h("span", { class: `state ${task.state}` }, task.state)],
    ["Created", time(task.createdAt)],
    ["Due", time(task.estimateExecutionAt)],
    ["Next retry", time(task.estimateNextRetryAt)],
    ["Ended", time(task.estimateEndAt)],
    ["Attempts", task.attempts],
    ["Retries", `${task.retryCount} of ${task.retryLimit}`],
    ["Last status", task.statusCode || "–"],
    ["Last error", task.error || "–"],
  ];
  show(
    h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
    h("h1", {}, "Task ", h("code", { "data-task-id": task.id }, task.id)),
    actions,
    edit,
    h("dl", { class: "facts" }, facts.map(([name, value]) => [h("dt", {}, name), h("dd", {}, value)])),
    h("h2", {}, "Request"),
    // what was asked: the options left at null are not shown
    h("pre", { class: "request" }, JSON.stringify(config, (key, value) => (value === null ? undefined : value), 2)),
    h("h2", {}, "Attempts"),
    attempts.length ? timeline(attempts) : h("p", { class: "empty" }, "No attempt yet."),
  );
}

const PHASES = [
  ["dnsMs", "DNS"],
  ["connectMs", "Connect"],
  ["tlsMs", "TLS"],
  ["firstByteMs", "First byte"],
];

function timeline(attempts) {
  const longest = Math.max(1, ...attempts.map((a) => a.timings.totalMs));
  return h(
    "ol",
    { class: "timeline" },
    attempts.map((attempt) => {
      const ok = !attempt.error;
      const rest = Math.max(0, attempt.timings.totalMs - PHASES.reduce((sum, [key]) => sum + attempt.timings[key], 0));
      const bars = [...PHASES.map(([key, label]) => [label, attempt.timings[key], key]), ["Transfer", rest, "rest"]];
      return h(
        "li",
        { class: ok ? "ok" : "failed", "data-attempt": attempt.number },
        h(
          "div",
          { class: "attempt-head" },
          h("strong", {}, `#${attempt.number}`),
          " ",
          h("span", { class: "status" }, attempt.statusCode ? `HTTP ${attempt.statusCode}` : "no answer"),
          " · started ",
          time(attempt.startedAt),
          ` · ${Math.max(0, attempt.startedAt - attempt.dueAt)} ms after due · `,
          duration(attempt.timings.totalMs),
          attempt.httpVersion ? ` · HTTP/${attempt.httpVersion}` : "",
          attempt.remoteAddress ? ` · ${attempt.remoteAddress}` : "",
          ` · ${attempt.responseBytes} bytes`,
        ),
        attempt.error ? h("div", { class: "error" }, attempt.error) : null,
        h(
          "div",
          { class: "bars", role: "img", "aria-label": bars.map(([label, ms]) => `${label} ${duration(ms)}`).join(", ") },
          bars.map(([label, ms, key]) => h("span", { class: `bar ${key}`, title: `${label}: ${duration(ms)}`, style: { width: `${((ms / longest) * 100).toFixed(2)}%` } })),
        ),
      );
    }),
  );
}

// ---- activity: the answering server's last hour ----

async function activityPage() {
  const points = await api("/v1/activity");
  show(
    h("h1", {}, "Activity"),
    h("p", {}, "The last hour of the server process that answered, a point a minute. Prometheus (/metrics) has every process and node."),
    chart("Attempts per minute", points, [["succeeded", "Succeeded"], ["failed", "Failed"]]),
    chart("Lateness (ms)", points, [["latenessP50Ms", "p50"], ["latenessP99Ms", "p99"]]),
    chart("Due backlog", points, [["backlog", "Backlog"]]),
  );
}

function chart(title, points, series) {
  const width = 600;
  const height = 160;
  const values = points.flatMap((point) => series.map(([key]) => point[key] || 0));
  const top = Math.max(1, ...values);
  // the last hour on a fixed axis: a minute without a point is a gap, not squeezed out
  const last = points.length ? points[points.length - 1].minute : 0;
  const x = (point) => ((point.minute - (last - 59 * 60000)) / (59 * 60000)) * (width - 8) + 4;
  const y = (value) => height - 4 - ((value || 0) / top) * (height - 14);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  series.forEach(([key], index) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.map((point) => `${x(point).toFixed(1)},${y(point[key]).toFixed(1)}`).join(" "));
    line.setAttribute("class", `series series-${index}`);
    svg.append(line);
    for (const point of points) {
      const dot = document.createElementNS("http://www.w3.org/2000/svg", "circle");
      dot.setAttribute("cx", x(point).toFixed(1));
      dot.setAttribute("cy", y(point[key]).toFixed(1));
      dot.setAttribute("r", "3");
      dot.setAttribute("class", `dot series-${index}`);
      svg.append(dot);
    }
  });
  return h(
    "figure",
    { class: "chart" },
    h("figcaption", {}, title, " ", series.map(([key, label], index) => h("span", { class: `legend series-${index}` }, `${label}: ${points.length ? points[points.length - 1][key] ?? "–" : "–"}`))),
    svg,
    h("p", { class: "axis" }, `0 – ${top}`),
  );
}

// ---- the operator's view (ADMIN_TOKEN) ----

async function operatorPage() {
  const token = h("input", { id: "admin-token", type: "password", autocomplete: "off" });
  const form = h(
    "form",
    {
      class: "card",
      onsubmit: (event) => {
        event.preventDefault();
        sessionStorage.setItem(SESSION.admin, token.value.trim());
        render();
      },
    },
    h("label", { for: "admin-token" }, "Admin token"),
    token,
    h("button", { type: "submit" }, "Open"),
  );
  if (!sessionStorage.getItem(SESSION.admin)) {
    show(h("h1", {}, "Operator"), h("p", {}, "Across owners, with the server's ADMIN_TOKEN."), form);
    return;
  }
  let overview;
  try {
    overview = await api("/v1/admin/overview", { admin: true });
  } catch (error) {
    sessionStorage.removeItem(SESSION.admin);
    show(h("h1", {}, "Operator"), form);
    alertText(error.message);
    return;
  }
  show(
    h("h1", {}, "Operator"),
    h("ul", { class: "counts" }, STATES.map((name) => h("li", {}, name, " ", h("strong", {}, overview.tasks[name])))),
    h("p", {}, `Due backlog: ${overview.dueBacklog} · oldest waiting ${duration(overview.oldestDueAgeMs)}`),
    h("h2", {}, "Instances"),
    h(
      "table",
      { class: "instances" },
      h("thead", {}, h("tr", {}, ["Instance", "Host", "Pid", "Heartbeat", "In flight"].map((name) => h("th", { scope: "col" }, name)))),
      h("tbody", {}, overview.instances.map((i) => h("tr", { "data-instance-id": i.id }, h("td", {}, i.id), h("td", {}, i.host), h("td", {}, i.pid), h("td", {}, time(i.heartbeatAt)), h("td", {}, i.inFlight)))),
    ),
    h("h2", {}, "Last backups"),
    overview.backups.length
      ? h(
          "table",
          { class: "backups" },
          h("thead", {}, h("tr", {}, ["Started", "State", "Finished", "Where", "Bytes", "Error"].map((name) => h("th", { scope: "col" }, name)))),
          h("tbody", {}, overview.backups.map((b) => h("tr", {}, h("td", {}, time(b.startedAt)), h("td", {}, b.state), h("td", {}, time(b.finishedAt)), h("td", {}, b.location || "–"), h("td", {}, b.size ?? "–"), h("td", {}, b.error || "")))),
        )
      : h("p", { class: "empty" }, "No scheduled backup yet."),
  );
}

// ---- start ----

document.getElementById("sign-out").addEventListener("click", signOut);
window.addEventListener("hashchange", render);
render();
