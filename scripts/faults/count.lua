-- wrk script for scripts/faults.sh: counts responses by status code in every thread and prints
-- one machine-readable line at the end:
--   WRKSTATS {"requests":N,"statuses":{"200":N,"502":N},"connect":N,"read":N,"write":N,...}
-- Optional argument (after `--`): milliseconds to wait before each request on a connection
-- (wrk's delay() hook), which bounds the request rate: connections x 1000 / (delay + latency).
local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
    pause_ms = tonumber(args[1] or "0") or 0
end

function delay()
    return pause_ms
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        local s = t:get("statuses")
        for code, n in pairs(s or {}) do
            total[code] = (total[code] or 0) + n
        end
    end
    local parts = {}
    for code, n in pairs(total) do
        parts[#parts + 1] = string.format('"%d":%d', code, n)
    end
    local e = summary.errors
    io.write(string.format(
        'WRKSTATS {"requests":%d,"statuses":{%s},"connect":%d,"read":%d,"write":%d,' ..
        '"timeout":%d,"status":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"duration_us":%d}\n',
        summary.requests, table.concat(parts, ","), e.connect, e.read, e.write, e.timeout,
        e.status, latency:percentile(50), latency:percentile(99), latency.max, summary.duration))
end
