-- wrk script: register `total` tasks (numbered n = 0..total-1 across threads). A thread
-- stops once all its registrations are answered; wrk runs until the harness interrupts
-- it (then it prints the summary of done()).
-- args: total owner_id key target_base mode due_base spread_ms body_bytes threads
local threads_made = 0
local all_threads = {}

function setup(thread)
  thread:set("id", threads_made)
  threads_made = threads_made + 1
  table.insert(all_threads, thread)
end

function init(args)
  total = tonumber(args[1])
  target = args[4]
  mode = args[5]
  due_base = tonumber(args[6])
  spread = tonumber(args[7])
  filler = string.rep("x", tonumber(args[8]))
  thread_count = tonumber(args[9])
  counter = 0
  pending = 0
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  wrk.headers["X-Tasks-Owner-Id"] = args[2]
end

local function body(n)
  if mode == "register" then
    return string.format(
      '{"httpRequest":{"url":"%s/t/0/%d","method":"POST","data":"%s"},"config":{"executionDelay":86400000}}',
      target, n, filler)
  end
  local due = due_base + math.floor(n * spread / total)
  if mode == "retry" then
    return string.format(
      '{"httpRequest":{"url":"%s/fail/%d/%d","method":"GET"},"config":{"executeAt":%d,"retry":3,"retryInterval":100,"retryExponential":false}}',
      target, due, n, due)
  end
  return string.format(
    '{"httpRequest":{"url":"%s/t/%d/%d","method":"GET"},"config":{"executeAt":%d}}',
    target, due, n, due)
end

function request()
  if id == 0 and not verified then
    -- wrk calls request() once on thread 0 to check the script; that one is never sent
    verified = true
    return wrk.format("GET", "/status")
  end
  local n = id + counter * thread_count
  counter = counter + 1
  if n >= total then
    -- all sent: once all are answered this thread stops; until then a cheap request
    if pending == 0 then
      wrk.thread:stop()
    end
    return wrk.format("GET", "/status")
  end
  pending = pending + 1
  return wrk.format("POST", "/v1/queues/register", nil, body(n))
end

function response(status, headers, body)
  if body ~= "OK" then
    pending = pending - 1
  end
end

function done(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "status_errors": %d, "socket_errors": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99), latency.max))
end
