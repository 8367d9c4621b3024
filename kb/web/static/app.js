// Chroma KB knowledge page: plain JavaScript, no build step, no network but this server.
"use strict";

const TEXT = {
  en: {
    subtitle: "knowledge bases", changeKey: "API key", kbs: "Knowledge bases", noKbs: "No knowledge base yet: create one below.",
    newKb: "New knowledge base", name: "Name", embedder: "Embedding model", chunkMode: "Chunking", general: "General",
    parentChild: "Parent-child", chunkSize: "Max tokens", overlap: "Overlap", separator: "Separator",
    childSize: "Child max tokens", childOverlap: "Child overlap", create: "Create", pick: "Choose or create a knowledge base.",
    drop: "Drop knowledge base", documents: "Documents", testing: "Retrieval testing", dropHere: "Drop files here or click to choose",
    uploads: "Uploads", clear: "Clear finished", document: "Document", chunks: "Chunks", ingested: "Ingested", metadata: "Metadata",
    noDocs: "No documents yet.", close: "Close", more: "More", mode: "Mode", fusion: "Fusion", vectorWeight: "Vector weight",
    auto: "auto", threshold: "Score threshold", filter: "Metadata filter (JSON)", search: "Search",
    queryPlaceholder: "Type a question, e.g. 年假可以顺延吗？ or how does rank fusion work",
    keyTitle: "API key", keyHelp: "Enter the API key set in this endpoint's settings in Dify. It is kept only in this browser tab.",
    ok: "OK", cancel: "Cancel", confirm: "Confirm", wrongKey: "Wrong API key; try again.",
    stats: "{chunks} chunks · {documents} docs · {embedder} · {size}",
    meta: "{chunks} chunks · {documents} documents · embedder {embedder} · {size} on disk · chunking {chunking}",
    accepted: "{ext} · up to {max} per file",
    view: "Chunks", del: "Delete", delDocTitle: "Delete document", delDocText: "Delete “{doc}” and its {n} chunks from “{kb}”?",
    dropTitle: "Drop knowledge base", dropText: "This deletes “{kb}” with all its documents. Type its name to confirm.",
    created: "Created “{kb}”.", dropped: "Dropped “{kb}”.", deleted: "Deleted “{doc}” ({n} chunks).",
    unsupported: "{file}: unsupported file type; supported: {ext}.", empty: "{file}: the file is empty.",
    tooLarge: "{file}: {size} is over the limit of {max} per file; split it into smaller files.",
    uploading: "Uploading… {pct}%", queued: "Waiting to be processed…", parsing: "Parsing the file…",
    embedding: "Chunking and embedding: {done} / {total} chunks", done: "Done: {chunks} chunks ({added} new, {unchanged} unchanged) in {seconds} s",
    unchanged: "Unchanged: the same file is already here ({chunks} chunks); nothing to do.", failed: "Failed: {message}",
    resumed: "resumed after a restart", chunkMeta: "{total} chunks · {title}", position: "#{n}", parent: "Parent passage #{n}",
    took: "{n} hits in {ms} ms", noHits: "No hits in {ms} ms.", semantic: "semantic", keyword: "keyword",
    notFound: "not found", rerank: "rerank", rank: "#{rank} {score}", childHits: "Matching child chunks",
    network: "The server did not answer; check that it is running.",
  },
  zh: {
    subtitle: "知识库", changeKey: "API 密钥", kbs: "知识库", noKbs: "还没有知识库：在下方新建一个。",
    newKb: "新建知识库", name: "名称", embedder: "向量模型", chunkMode: "分段方式", general: "通用",
    parentChild: "父子分段", chunkSize: "分段最大 token 数", overlap: "重叠 token 数", separator: "分段标识符",
    childSize: "子段最大 token 数", childOverlap: "子段重叠", create: "创建", pick: "请选择或新建一个知识库。",
    drop: "删除知识库", documents: "文档", testing: "召回测试", dropHere: "把文件拖到这里，或点击选择",
    uploads: "上传", clear: "清除已完成", document: "文档", chunks: "分段", ingested: "入库时间", metadata: "元数据",
    noDocs: "还没有文档。", close: "关闭", more: "更多", mode: "检索模式", fusion: "融合方式", vectorWeight: "向量权重",
    auto: "自动", threshold: "分数阈值", filter: "元数据过滤（JSON）", search: "检索",
    queryPlaceholder: "输入问题，例如：年假可以顺延吗？ 或 how does rank fusion work",
    keyTitle: "API 密钥", keyHelp: "请输入 Dify 中此端点设置的 API 密钥。它只保存在当前浏览器标签页中。",
    ok: "确定", cancel: "取消", confirm: "确认", wrongKey: "API 密钥不正确，请重试。",
    stats: "{chunks} 段 · {documents} 个文档 · {embedder} · {size}",
    meta: "{chunks} 段 · {documents} 个文档 · 向量模型 {embedder} · 占用 {size} · 分段 {chunking}",
    accepted: "{ext} · 每个文件不超过 {max}",
    view: "查看分段", del: "删除", delDocTitle: "删除文档", delDocText: "从“{kb}”中删除“{doc}”及其 {n} 个分段？",
    dropTitle: "删除知识库", dropText: "这将删除“{kb}”及其全部文档。请输入知识库名称以确认。",
    created: "已创建“{kb}”。", dropped: "已删除“{kb}”。", deleted: "已删除“{doc}”（{n} 个分段）。",
    unsupported: "{file}：不支持的文件类型；支持：{ext}。", empty: "{file}：文件为空。",
    tooLarge: "{file}：{size} 超过了单个文件 {max} 的上限，请拆分成较小的文件。",
    uploading: "上传中… {pct}%", queued: "等待处理…", parsing: "正在解析文件…",
    embedding: "分段并向量化：{done} / {total} 段", done: "完成：{chunks} 段（新增 {added}，未变 {unchanged}），用时 {seconds} 秒",
    unchanged: "未变化：同一文件已在知识库中（{chunks} 段），无需处理。", failed: "失败：{message}",
    resumed: "重启后继续", chunkMeta: "{total} 段 · {title}", position: "#{n}", parent: "父段 #{n}",
    took: "{n} 条结果，用时 {ms} 毫秒", noHits: "没有结果（{ms} 毫秒）。", semantic: "语义", keyword: "关键词",
    notFound: "未命中", rerank: "重排序", rank: "第 {rank} 名 {score}", childHits: "命中的子段",
    network: "服务器没有响应，请检查它是否在运行。",
  },
};
const LANG = (navigator.languages || [navigator.language || "en"]).some((l) => /^zh/i.test(l)) ? "zh" : "en";
const t = (key, vars = {}) => (TEXT[LANG][key] || TEXT.en[key] || key).replace(/\{(\w+)\}/g, (_, k) => (k in vars ? vars[k] : ""));
const $ = (sel) => document.querySelector(sel);
const KEY = "chroma_kb.key";

const state = { info: null, kbs: [], current: null, chunkDoc: null, chunkOffset: 0, polling: null, rows: new Map() };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let v = bytes / 1024, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function toast(message, error = false) {
  const box = $("#toast");
  box.textContent = message;
  box.className = error ? "toast error" : "toast";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, error ? 9000 : 4000);
}

// ---------------------------------------------------------------- API calls (with the key)
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function askKey(wrong) {
  return new Promise((resolve) => {
    const dialog = $("#key-dialog");
    $("#key-error").hidden = !wrong;
    $("#key-error").textContent = t("wrongKey");
    $("#key-input").value = "";
    dialog.onclose = () => { sessionStorage.setItem(KEY, $("#key-input").value.trim()); $("#key-button").hidden = false; resolve(); };
    dialog.showModal();
  });
}

async function api(method, path, { query = {}, json, body } = {}) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const headers = {};
    const key = sessionStorage.getItem(KEY);
    if (key) headers.Authorization = `Bearer ${key}`;
    let payload = body;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(json); }
    if (body !== undefined) headers["Content-Type"] = "application/octet-stream";
    const qs = new URLSearchParams(query).toString();
    let response;
    try {
      response = await fetch(`ui/api/${path}${qs ? `?${qs}` : ""}`, { method, headers, body: payload });
    } catch (e) {
      throw new ApiError(0, t("network"));
    }
    if (response.status === 401 || response.status === 403) {
      const retry = response.status === 403 || key;
      await askKey(Boolean(retry && key));
      continue;
    }
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
    return data;
  }
  throw new ApiError(403, t("wrongKey"));
}

// ---------------------------------------------------------------- knowledge bases
function chunkingLabel(c) {
  return c.mode === "parent_child" ? `${t("parentChild")} ${c.max_tokens}/${c.child_max_tokens}` : `${t("general")} ${c.max_tokens}`;
}

async function loadKbs() {
  const data = await api("GET", "kbs");
  state.kbs = data.knowledge_bases;
  const list = $("#kb-list");
  list.replaceChildren(...state.kbs.map((kb) => el("li", {},
    el("button", { type: "button", "aria-current": state.current === kb.name ? "true" : "false", "data-kb": kb.name, onclick: () => selectKb(kb.name) },
      el("span", { class: "kb-name", text: kb.name }),
      el("span", { class: "kb-stats", text: t("stats", { chunks: kb.chunks, documents: kb.documents, embedder: kb.embedder, size: size(kb.size_bytes) }) })))));
  $("#kb-empty").hidden = state.kbs.length > 0;
  if (state.current && !state.kbs.some((k) => k.name === state.current)) selectKb(null);
  else if (state.current) showKbHead();
}

function showKbHead() {
  const kb = state.kbs.find((k) => k.name === state.current);
  if (!kb) return;
  $("#kb-title").textContent = kb.name;
  $("#kb-meta").textContent = t("meta", { chunks: kb.chunks, documents: kb.documents, embedder: kb.embedder, size: size(kb.size_bytes), chunking: chunkingLabel(kb.chunking) });
}

async function selectKb(name) {
  state.current = name;
  state.rows.clear();
  $("#uploads").replaceChildren();
  $("#hits").replaceChildren();
  $("#search-summary").textContent = "";
  closeChunks();
  for (const b of document.querySelectorAll("#kb-list button")) b.setAttribute("aria-current", b.dataset.kb === name ? "true" : "false");
  $("#pick").hidden = Boolean(name);
  $("#kb-view").hidden = !name;
  if (!name) return;
  showKbHead();
  await Promise.all([loadDocs(), pollJobs()]);
}

async function createKb(event) {
  event.preventDefault();
  const f = event.target.elements;
  const chunking = {
    mode: f.mode.value, max_tokens: Number(f.max_tokens.value), overlap: Number(f.overlap.value), separator: f.separator.value,
  };
  if (f.mode.value === "parent_child") {
    chunking.child_max_tokens = Number(f.child_max_tokens.value);
    chunking.child_overlap = Number(f.child_overlap.value);
  }
  try {
    const kb = await api("POST", "kbs", { json: { name: f.name.value, embedder: f.embedder.value, chunking } });
    toast(t("created", { kb: kb.name }));
    f.name.value = "";
    await loadKbs();
    await selectKb(kb.name);
  } catch (e) { toast(e.message, true); }
}

function confirmDialog(title, text, expected) {
  return new Promise((resolve) => {
    const dialog = $("#confirm-dialog");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    const input = $("#confirm-input");
    input.hidden = expected === null;
    input.value = "";
    input.placeholder = expected || "";
    const ok = $("#confirm-ok");
    ok.disabled = expected !== null;
    input.oninput = () => { ok.disabled = input.value.trim() !== expected; };
    $("#confirm-cancel").onclick = () => dialog.close("cancel");
    dialog.onclose = () => resolve(dialog.returnValue !== "cancel" && (expected === null || input.value.trim() === expected) ? input.value.trim() : null);
    dialog.returnValue = "";
    dialog.showModal();
  });
}

async function dropKb() {
  const name = state.current;
  const typed = await confirmDialog(t("dropTitle"), t("dropText", { kb: name }), name);
  if (typed === null) return;
  try {
    await api("DELETE", "kbs", { query: { kb: name, confirm: typed } });
    toast(t("dropped", { kb: name }));
    await selectKb(null);
    await loadKbs();
  } catch (e) { toast(e.message, true); }
}

// ---------------------------------------------------------------- documents and chunks
async function loadDocs() {
  const name = state.current;
  const data = await api("GET", "documents", { query: { kb: name } });
  if (name !== state.current) return;
  $("#doc-rows").replaceChildren(...data.documents.map((d) => el("tr", { "data-doc": d.doc_id },
    el("td", { class: "title" }, d.title || d.doc_id, d.title && d.title !== d.doc_id ? el("small", { text: d.doc_id }) : null),
    el("td", { text: String(d.chunks) }),
    el("td", { text: (d.ingested_at || "").replace("T", " ").replace("Z", " UTC") }),
    el("td", { class: "meta", text: Object.keys(d.metadata).length ? JSON.stringify(d.metadata) : "" }),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "link", text: t("view"), onclick: () => openChunks(d.doc_id) }),
      el("button", { type: "button", class: "link danger-link", text: t("del"), onclick: () => deleteDoc(d) })))));
  $("#docs-empty").hidden = data.documents.length > 0;
}

async function deleteDoc(doc) {
  const ok = await confirmDialog(t("delDocTitle"), t("delDocText", { doc: doc.doc_id, n: doc.chunks, kb: state.current }), null);
  if (ok === null) return;
  try {
    const r = await api("DELETE", "documents", { query: { kb: state.current, doc: doc.doc_id } });
    toast(t("deleted", { doc: doc.doc_id, n: r.chunks_removed }));
    if (state.chunkDoc === doc.doc_id) closeChunks();
    await Promise.all([loadDocs(), loadKbs()]);
  } catch (e) { toast(e.message, true); }
}

function closeChunks() {
  state.chunkDoc = null;
  $("#chunk-view").hidden = true;
  $("#chunk-list").replaceChildren();
}

async function openChunks(docId, more = false) {
  if (!more) { state.chunkDoc = docId; state.chunkOffset = 0; $("#chunk-list").replaceChildren(); }
  try {
    const data = await api("GET", "chunks", { query: { kb: state.current, doc: docId, offset: state.chunkOffset, limit: 50 } });
    const doc = data.document || { title: docId, doc_id: docId, metadata: {} };
    $("#chunk-title").textContent = doc.title || doc.doc_id;
    $("#chunk-meta").textContent = t("chunkMeta", { total: data.total, title: doc.doc_id }) + (Object.keys(doc.metadata || {}).length ? ` · ${JSON.stringify(doc.metadata)}` : "");
    let lastParent = null;
    for (const c of data.chunks) {
      const item = el("li", {}, el("span", { class: "pos", text: t("position", { n: c.position + 1 }) }), el("p", { class: "text", text: c.content }));
      if (c.parent_text !== undefined && c.parent_position !== lastParent) {
        item.append(el("details", { class: "parent" }, el("summary", { text: t("parent", { n: c.parent_position + 1 }) }), el("p", { class: "text", text: c.parent_text })));
        lastParent = c.parent_position;
      }
      $("#chunk-list").append(item);
    }
    state.chunkOffset += data.chunks.length;
    $("#chunk-more").hidden = state.chunkOffset >= data.total;
    $("#chunk-view").hidden = false;
    if (!more) $("#chunk-view").scrollIntoView({ block: "nearest" });
  } catch (e) { toast(e.message, true); }
}

// ---------------------------------------------------------------- uploads and jobs
function uploadRow(key, filename) {
  let row = state.rows.get(key);
  if (!row) {
    const li = el("li", {}, el("span", { class: "file", text: filename }), el("progress", { max: 1, value: 0 }), el("span", { class: "state" }));
    $("#uploads").prepend(li);
    row = { li, bar: li.querySelector("progress"), text: li.querySelector(".state") };
    state.rows.set(key, row);
  }
  $("#uploads-head").hidden = false;
  return row;
}

function setRow(row, status, message, fraction) {
  row.li.className = status;
  row.text.textContent = message;
  if (fraction === null) row.bar.removeAttribute("value"); else row.bar.value = fraction;
}

function showJob(job) {
  const row = uploadRow(job.id, job.filename);
  state.rows.set(job.id, row);
  const r = job.report || {};
  if (job.status === "queued") setRow(row, "queued", t("queued") + (job.message ? ` (${t("resumed")})` : ""), null);
  else if (job.status === "parsing") setRow(row, "parsing", t("parsing"), null);
  else if (job.status === "embedding") setRow(row, "embedding", t("embedding", { done: job.done, total: job.total }), job.total ? job.done / job.total : null);
  else if (job.status === "done") setRow(row, "done", t("done", { chunks: r.chunks ?? job.total, added: r.added ?? 0, unchanged: r.unchanged ?? 0, seconds: r.seconds ?? 0 }), 1);
  else if (job.status === "unchanged") setRow(row, "unchanged", t("unchanged", { chunks: job.total }), 1);
  else setRow(row, "failed", t("failed", { message: job.message }), 0);
}

async function pollJobs() {
  clearTimeout(state.polling);
  const name = state.current;
  if (!name) return;
  let active = false;
  try {
    const data = await api("GET", "jobs", { query: { kb: name } });
    if (name !== state.current) return;
    for (const job of data.jobs) {
      const row = state.rows.get(job.id);
      const was = row && row.li.className;
      showJob(job);
      if (["queued", "parsing", "embedding"].includes(job.status)) active = true;
      else if (was && was !== job.status && ["queued", "parsing", "embedding"].includes(was)) { loadDocs(); loadKbs(); }
    }
  } catch (e) { toast(e.message, true); }
  if (active || state.pendingUploads > 0) state.polling = setTimeout(pollJobs, 1000);
}
state.pendingUploads = 0;

function precheck(file) {
  const info = state.info;
  const dot = file.name.lastIndexOf(".");
  const ext = dot > 0 ? file.name.slice(dot).toLowerCase() : "";
  if (!info.extensions.includes(ext)) return t("unsupported", { file: file.name, ext: info.extensions.join(" ") });
  if (file.size === 0) return t("empty", { file: file.name });
  if (file.size > info.max_file_bytes) return t("tooLarge", { file: file.name, size: size(file.size), max: size(info.max_file_bytes) });
  return null;
}

async function uploadFile(file, kb) {
  const key = `local-${Math.random().toString(36).slice(2)}`;
  const row = uploadRow(key, file.name);
  const problem = precheck(file);
  if (problem) { setRow(row, "failed", problem, 0); return; }
  state.pendingUploads++;
  try {
    setRow(row, "uploading", t("uploading", { pct: 0 }), 0);
    const up = await api("POST", "uploads", { query: { kb }, json: { filename: file.name, size: file.size } });
    for (let i = 0; i < up.parts; i++) {
      const part = file.slice(i * up.part_bytes, Math.min(file.size, (i + 1) * up.part_bytes));
      await api("POST", "uploads/part", { query: { id: up.upload, index: i, bytes: part.size }, body: part });
      const pct = Math.round(((i + 1) / up.parts) * 100);
      setRow(row, "uploading", t("uploading", { pct }), (i + 1) / up.parts);
    }
    const job = await api("POST", "uploads/finish", { query: { id: up.upload } });
    state.rows.delete(key);
    state.rows.set(job.id, row);
    showJob(job);
    if (job.status === "unchanged") { loadDocs(); }
  } catch (e) {
    setRow(row, "failed", t("failed", { message: e.message }), 0);
  } finally {
    state.pendingUploads--;
    pollJobs();
  }
}

async function uploadFiles(files) {
  const kb = state.current;
  if (!kb) return;
  pollJobs();
  // One file at a time: the server ingests one at a time anyway, and parts stay in order.
  for (const file of files) await uploadFile(file, kb);
}

async function clearJobs() {
  try {
    await api("DELETE", "jobs", { query: { kb: state.current } });
    for (const [id, row] of state.rows) {
      if (!["queued", "parsing", "embedding", "uploading"].includes(row.li.className)) { row.li.remove(); state.rows.delete(id); }
    }
    $("#uploads-head").hidden = state.rows.size === 0;
  } catch (e) { toast(e.message, true); }
}

// ---------------------------------------------------------------- retrieval testing
function highlighted(text, spans) {
  // Offsets are code points (Python); JavaScript strings count UTF-16 units.
  const chars = Array.from(text);
  const out = [];
  let at = 0;
  for (const [start, end] of spans || []) {
    if (start > at) out.push(chars.slice(at, start).join(""));
    out.push(el("mark", { text: chars.slice(start, end).join("") }));
    at = end;
  }
  if (at < chars.length) out.push(chars.slice(at).join(""));
  return el("p", { class: "text" }, out);
}

function channel(kind, rank, score) {
  const label = t(kind);
  if (rank === null || rank === undefined) {
    return el("span", { class: "chip none", text: score === null || score === undefined ? `${label}: ${t("notFound")}` : `${label}: ${t("notFound")} (${score.toFixed(3)})` });
  }
  return el("span", { class: `chip ${kind === "semantic" ? "sem" : "kw"}`, text: `${label} ${t("rank", { rank, score: score === null ? "" : score.toFixed(3) })}` });
}

async function runSearch(event) {
  event.preventDefault();
  const f = event.target.elements;
  const body = {
    query: f.query.value, mode: f.mode.value, fusion: f.fusion.value, top_k: Number(f.top_k.value),
    threshold: Number(f.threshold.value || 0), filter: f.filter.value.trim() || null,
    vector_weight: f.vector_weight.value === "" ? null : Number(f.vector_weight.value),
  };
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const data = await api("POST", "search", { query: { kb: state.current }, json: body });
    const ms = Math.round(data.seconds * 1000);
    $("#search-summary").textContent = data.hits.length ? t("took", { n: data.hits.length, ms }) : t("noHits", { ms });
    $("#hits").replaceChildren(...data.hits.map((h, i) => el("li", { class: "hit" },
      el("div", { class: "hit-head" },
        el("span", { class: "score", text: h.score.toFixed(3) }),
        el("span", { class: "hit-title", text: `${i + 1}. ${h.title || h.doc_id}` }),
        el("span", { class: "muted", text: `${h.doc_id} · ${t("position", { n: h.position + 1 })}` }),
        channel("semantic", h.semantic_rank, h.semantic_score),
        channel("keyword", h.keyword_rank, h.keyword_score),
        h.rerank_score !== null ? el("span", { class: "chip", text: `${t("rerank")} ${h.rerank_score.toFixed(3)}` }) : null),
      highlighted(h.content, h.spans),
      h.children && h.children.length ? el("div", { class: "children" }, el("span", { class: "muted", text: t("childHits") }),
        el("ul", {}, h.children.map((c) => el("li", {}, el("span", { class: "chip", text: `${t("position", { n: c.position + 1 })} ${c.score.toFixed(3)}` }), highlighted(c.content, c.spans))))) : null,
      Object.keys(h.metadata).length ? el("p", { class: "meta muted", text: JSON.stringify(h.metadata) }) : null)));
  } catch (e) {
    $("#search-summary").textContent = "";
    $("#hits").replaceChildren();
    toast(e.message, true);
  } finally { button.disabled = false; }
}

// ---------------------------------------------------------------- start
function translate() {
  document.documentElement.lang = LANG === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
}

function fillForms(info) {
  const create = $("#create-form").elements;
  create.embedder.replaceChildren(...info.embedders.map((e) => el("option", { value: e, text: e, selected: e === info.default_embedder })));
  create.max_tokens.value = info.chunking.max_tokens;
  create.overlap.value = info.chunking.overlap;
  create.separator.value = info.chunking.separator.replace(/\n/g, "\\n");
  create.child_max_tokens.value = info.chunking.child_max_tokens;
  create.child_overlap.value = info.chunking.child_overlap;
  const toggleChild = () => { document.querySelector(".child-only").hidden = create.mode.value !== "parent_child"; };
  create.mode.onchange = toggleChild;
  toggleChild();
  const search = $("#search-form").elements;
  search.mode.replaceChildren(...info.modes.map((m) => el("option", { value: m, text: m, selected: m === info.default_mode })));
  search.fusion.replaceChildren(...info.fusions.map((m) => el("option", { value: m, text: m, selected: m === info.default_fusion })));
  search.top_k.value = info.default_top_k;
  search.top_k.max = info.max_top_k;
  $("#accepted").textContent = t("accepted", { ext: info.extensions.join(" "), max: size(info.max_file_bytes) });
  $("#file-input").accept = info.extensions.join(",");
}

function wire() {
  $("#create-form").addEventListener("submit", createKb);
  $("#search-form").addEventListener("submit", runSearch);
  $("#drop-button").addEventListener("click", dropKb);
  $("#clear-jobs").addEventListener("click", clearJobs);
  $("#chunk-close").addEventListener("click", closeChunks);
  $("#chunk-more").addEventListener("click", () => openChunks(state.chunkDoc, true));
  $("#key-button").addEventListener("click", async () => { await askKey(false); await loadKbs(); });
  const tabs = [["#tab-docs", "#panel-docs"], ["#tab-search", "#panel-search"]];
  for (const [tab, panel] of tabs) {
    $(tab).addEventListener("click", () => {
      for (const [other, otherPanel] of tabs) { $(other).setAttribute("aria-selected", String(other === tab)); $(otherPanel).hidden = other !== tab; }
    });
  }
  const zone = $("#dropzone"), input = $("#file-input");
  input.addEventListener("change", () => { uploadFiles(Array.from(input.files)); input.value = ""; });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); uploadFiles(Array.from(e.dataTransfer.files)); });
}

async function start() {
  translate();
  wire();
  if (sessionStorage.getItem(KEY)) $("#key-button").hidden = false;
  try {
    state.info = await api("GET", "info");
    fillForms(state.info);
    await loadKbs();
    if (state.kbs.length) await selectKb(state.kbs[0].name);
    else $("#create").open = true;
  } catch (e) { toast(e.message, true); }
}

document.addEventListener("DOMContentLoaded", start);
