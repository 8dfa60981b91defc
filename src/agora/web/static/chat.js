// The chat page: the gateway's /v1/chat/completions, called with the session cookie and the
// page's CSRF token, its answer streamed (fetch + a stream reader: EventSource cannot POST).
// Conversations live only in this browser's localStorage; nothing but the chat request itself
// is sent to the server. Answers are Markdown, rendered with marked, sanitised by DOMPurify and
// highlighted by highlight.js; without those files an answer is shown as plain text.
(function () {
  "use strict";

  var root = document.getElementById("chat");
  if (!root) { return; }
  var STORE = "agora.chat." + root.dataset.user;
  var API = root.dataset.api || "/v1";
  var TITLE_LENGTH = 60;
  var byId = function (id) { return document.getElementById(id); };
  var ui = {
    list: byId("chat-list"),
    listEmpty: byId("chat-list-empty"),
    messages: byId("chat-messages"),
    status: byId("chat-status"),
    form: byId("chat-form"),
    input: byId("chat-input"),
    send: byId("chat-send"),
    stop: byId("chat-stop"),
    model: byId("chat-model"),
    temperature: byId("chat-temperature"),
    temperatureValue: byId("chat-temperature-value"),
    maxTokens: byId("chat-max-tokens"),
    system: byId("chat-system")
  };
  var markdown = !!(window.marked && window.DOMPurify && window.DOMPurify.isSupported);
  // What the model may put on the page: formatting, never forms, styles or images (which
  // could call out); links open elsewhere and carry no referrer.
  var PURIFY = {
    USE_PROFILES: { html: true },
    FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "video", "audio"],
    FORBID_ATTR: ["style", "id", "name"]
  };
  if (markdown) {
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (node.tagName === "A") {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer nofollow");
      }
    });
  }
  if (window.hljs) { window.hljs.configure({ ignoreUnescapedHTML: true }); }

  var state = load();
  var running = null;  // {controller, conversation, answer, view}

  // --- storage ------------------------------------------------------------------------------

  function load() {
    var stored = null;
    try { stored = JSON.parse(window.localStorage.getItem(STORE) || "null"); } catch (e) { stored = null; }
    if (!stored || !Array.isArray(stored.conversations)) {
      stored = { conversations: [], current: null, prefs: {} };
    }
    stored.prefs = stored.prefs || {};
    stored.conversations.forEach(function (c) {
      c.messages.forEach(function (m) {
        if (m.pending) { m.pending = false; m.stopped = true; }  // the page went away mid-answer
      });
    });
    return stored;
  }

  function save() {
    try {
      window.localStorage.setItem(STORE, JSON.stringify(state));
    } catch (e) {
      say("This browser could not keep the conversation (" + e.message + "). Export it or clear old ones.");
    }
  }

  function current() {
    for (var i = 0; i < state.conversations.length; i++) {
      if (state.conversations[i].id === state.current) { return state.conversations[i]; }
    }
    return null;
  }

  function newId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }

  // --- settings -----------------------------------------------------------------------------

  function settingsFromControls() {
    var t = parseFloat(ui.temperatureValue.value);
    var max = parseInt(ui.maxTokens.value, 10);
    return {
      model: ui.model.value,
      system: ui.system.value,
      temperature: isNaN(t) ? 0.7 : Math.min(2, Math.max(0, t)),
      max_tokens: isNaN(max) || max < 1 ? null : max
    };
  }

  function showSettings(settings) {
    if (!settings) { return; }
    if (settings.model && hasOption(settings.model)) { ui.model.value = settings.model; }
    ui.system.value = settings.system || "";
    var t = typeof settings.temperature === "number" ? settings.temperature : 0.7;
    ui.temperature.value = String(t);
    ui.temperatureValue.value = String(t);
    ui.maxTokens.value = settings.max_tokens ? String(settings.max_tokens) : "";
  }

  function settingsChanged() {
    var settings = settingsFromControls();
    state.prefs = settings;
    var conversation = current();
    if (conversation) { conversation.settings = settings; }
    save();
  }

  function hasOption(value) {
    return Array.prototype.some.call(ui.model.options, function (o) { return o.value === value; });
  }

  ui.temperature.addEventListener("input", function () {
    ui.temperatureValue.value = ui.temperature.value;
    settingsChanged();
  });
  ui.temperatureValue.addEventListener("change", function () {
    var t = parseFloat(ui.temperatureValue.value);
    t = isNaN(t) ? 0.7 : Math.min(2, Math.max(0, t));
    ui.temperatureValue.value = String(t);
    ui.temperature.value = String(t);
    settingsChanged();
  });
  [ui.model, ui.maxTokens, ui.system].forEach(function (control) {
    control.addEventListener("change", settingsChanged);
  });

  function loadModels() {
    fetch(API + "/models", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.text().then(function (text) {
          if (!response.ok) { throw new Error(errorMessage(text, response.status)); }
          return JSON.parse(text);
        });
      })
      .then(function (listing) {
        var llms = (listing.data || []).filter(function (m) { return m.kind === "llm"; });
        ui.model.textContent = "";
        if (!llms.length) {
          ui.model.appendChild(new Option("No chat models available", ""));
          say("There is no chat model you may use yet. Ask an operator to add or grant one.");
          return;
        }
        llms.forEach(function (m) {
          var label = m.id + (m.ready_replicas === 0 ? " (starts on demand)" : "");
          ui.model.appendChild(new Option(label, m.id));
        });
        var wanted = (current() && current().settings && current().settings.model) || state.prefs.model;
        ui.model.value = wanted && hasOption(wanted) ? wanted : llms[0].id;
      })
      .catch(function (error) {
        ui.model.textContent = "";
        ui.model.appendChild(new Option("Models unavailable", ""));
        say("Could not list the models: " + error.message);
      });
  }

  // --- rendering ----------------------------------------------------------------------------

  function say(text) { ui.status.textContent = text; }

  function renderMarkdown(node, text) {
    if (!markdown) {
      node.textContent = text;
      node.classList.add("plain");
      return;
    }
    var html = window.marked.parse(text, { gfm: true, breaks: false, async: false });
    node.innerHTML = window.DOMPurify.sanitize(html, PURIFY);
    if (window.hljs) {
      node.querySelectorAll("pre code").forEach(function (code) { window.hljs.highlightElement(code); });
    }
  }

  function usageText(usage) {
    if (!usage) { return ""; }
    return (usage.prompt_tokens || 0) + " tokens in · " + (usage.completion_tokens || 0) + " out";
  }

  function messageView(message) {
    var article = document.createElement("article");
    article.className = "msg msg-" + (message.role === "user" ? "user" : "assistant");
    var head = document.createElement("div");
    head.className = "msg-head";
    head.textContent = message.role === "user" ? "You" : (message.model || "Assistant");
    var body = document.createElement("div");
    body.className = "msg-body";
    var foot = document.createElement("div");
    foot.className = "msg-foot muted small";
    article.appendChild(head);
    article.appendChild(body);
    article.appendChild(foot);
    var view = { article: article, body: body, foot: foot };
    fillMessage(view, message);
    return view;
  }

  function fillMessage(view, message) {
    if (message.role === "user") {
      view.body.textContent = message.content;
    } else {
      renderMarkdown(view.body, message.content);
    }
    view.body.hidden = message.role !== "user" && !message.content && !message.pending;
    view.article.setAttribute("aria-busy", message.pending ? "true" : "false");
    view.article.classList.toggle("pending", !!message.pending);
    view.foot.textContent = "";
    var notes = [];
    if (message.usage) { notes.push(usageText(message.usage)); }
    if (message.finish === "length") { notes.push("cut off at the token limit"); }
    if (message.stopped) { notes.push("stopped"); }
    if (notes.length) {
      var usage = document.createElement("span");
      usage.className = "msg-usage";
      usage.textContent = notes.join(" · ");
      view.foot.appendChild(usage);
    }
    if (message.error) {
      var error = document.createElement("div");
      error.className = "alert error msg-error";
      error.setAttribute("role", "alert");
      error.textContent = message.error;
      view.foot.appendChild(error);
    }
  }

  function renderMessages() {
    var conversation = current();
    ui.messages.textContent = "";
    if (!conversation || !conversation.messages.length) {
      var empty = document.createElement("p");
      empty.className = "chat-empty muted";
      empty.id = "chat-empty";
      empty.textContent = "Choose a model and ask something. Answers appear as they are written.";
      ui.messages.appendChild(empty);
      return;
    }
    conversation.messages.forEach(function (message) {
      var view = messageView(message);
      ui.messages.appendChild(view.article);
      if (running && running.answer === message) { running.view = view; }
    });
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function renderList() {
    ui.list.textContent = "";
    var sorted = state.conversations.slice().sort(function (a, b) { return b.updated - a.updated; });
    ui.listEmpty.hidden = sorted.length > 0;
    sorted.forEach(function (conversation) {
      var item = document.createElement("li");
      var open = document.createElement("button");
      open.type = "button";
      open.className = "chat-open";
      open.textContent = conversation.title || "New conversation";
      open.title = new Date(conversation.updated).toLocaleString();
      if (conversation.id === state.current) {
        item.className = "current";
        open.setAttribute("aria-current", "true");
      }
      open.addEventListener("click", function () { select(conversation.id); });
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chat-delete";
      remove.textContent = "×";
      remove.setAttribute("aria-label", "Delete conversation: " + open.textContent);
      remove.addEventListener("click", function () { removeConversation(conversation.id); });
      item.appendChild(open);
      item.appendChild(remove);
      ui.list.appendChild(item);
    });
  }

  function renderAll() {
    renderList();
    renderMessages();
  }

  var scheduled = false;
  function scheduleAnswer() {
    if (scheduled) { return; }
    scheduled = true;
    var paint = function () {
      scheduled = false;
      if (!running || !running.view) { return; }
      var box = ui.messages;
      var atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
      fillMessage(running.view, running.answer);
      if (atBottom) { box.scrollTop = box.scrollHeight; }
    };
    if (document.hidden) { setTimeout(paint, 100); } else { window.requestAnimationFrame(paint); }
  }

  // --- conversations --------------------------------------------------------------------------

  function select(id) {
    stopRunning();
    state.current = id;
    var conversation = current();
    if (conversation) { showSettings(conversation.settings); }
    save();
    renderAll();
    say("");
  }

  function removeConversation(id) {
    if (running && running.conversation.id === id) { stopRunning(); }
    state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
    if (state.current === id) { state.current = null; }
    save();
    renderAll();
    say("Conversation deleted.");
  }

  byId("chat-new").addEventListener("click", function () {
    select(null);
    ui.input.focus();
  });

  byId("chat-clear").addEventListener("click", function () {
    if (!state.conversations.length) { say("There are no conversations to clear."); return; }
    if (!window.confirm("Delete every conversation kept in this browser?")) { return; }
    stopRunning();
    state.conversations = [];
    state.current = null;
    save();
    renderAll();
    say("All conversations were deleted from this browser.");
  });

  byId("chat-export").addEventListener("click", function () {
    var data = {
      exported_at: new Date().toISOString(),
      user: root.dataset.user,
      conversations: state.conversations
    };
    var blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = "agora-chat-" + new Date().toISOString().slice(0, 10) + ".json";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 10000);
    say("Exported " + state.conversations.length + " conversation(s).");
  });

  // --- sending --------------------------------------------------------------------------------

  ui.input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });

  ui.form.addEventListener("submit", function (event) {
    event.preventDefault();
    send();
  });

  ui.stop.addEventListener("click", stopRunning);

  function stopRunning() {
    if (running) { running.controller.abort(); }
  }

  function setBusy(busy) {
    ui.send.disabled = busy;
    ui.stop.hidden = !busy;
    ui.messages.setAttribute("aria-busy", busy ? "true" : "false");
  }

  function send() {
    var text = ui.input.value.trim();
    if (!text || running) { return; }
    var settings = settingsFromControls();
    if (!settings.model) { say("Choose a model first."); ui.model.focus(); return; }
    var conversation = current();
    if (!conversation) {
      conversation = {
        id: newId(),
        title: text.replace(/\s+/g, " ").slice(0, TITLE_LENGTH),
        created: Date.now(),
        messages: []
      };
      state.conversations.push(conversation);
      state.current = conversation.id;
    }
    conversation.settings = settings;
    conversation.updated = Date.now();
    var history = conversation.messages
      .filter(function (m) { return m.role === "user" || (m.content && !m.error); })
      .map(function (m) { return { role: m.role, content: m.content }; });
    conversation.messages.push({ role: "user", content: text });
    var answer = { role: "assistant", content: "", model: settings.model, pending: true };
    conversation.messages.push(answer);
    ui.input.value = "";
    save();

    var messages = [];
    if (settings.system.trim()) { messages.push({ role: "system", content: settings.system }); }
    messages = messages.concat(history, [{ role: "user", content: text }]);
    var request = {
      model: settings.model,
      messages: messages,
      temperature: settings.temperature,
      stream: true,
      stream_options: { include_usage: true }
    };
    if (settings.max_tokens) { request.max_tokens = settings.max_tokens; }

    running = { controller: new AbortController(), conversation: conversation, answer: answer, view: null };
    renderAll();
    setBusy(true);
    say("Waiting for " + settings.model + "…");
    complete(request, answer, running.controller.signal).then(
      function () { finish(answer, null); },
      function (error) { finish(answer, error); }
    );
  }

  function finish(answer, error) {
    answer.pending = false;
    if (error && error.name === "AbortError") {
      answer.stopped = true;
      say("Stopped.");
    } else if (error) {
      answer.error = error.message || String(error);
      say("The model could not answer.");
    } else {
      say("Answered." + (answer.usage ? " " + usageText(answer.usage) + "." : ""));
    }
    var view = running && running.view;
    running = null;
    save();
    setBusy(false);
    if (view && view.article.isConnected) { fillMessage(view, answer); } else { renderMessages(); }
    renderList();
  }

  function headers() {
    var h = {
      "Content-Type": "application/json",
      Accept: "text/event-stream",
      "X-CSRF-Token": root.dataset.csrf
    };
    if (root.dataset.project) { h["X-Agora-Project"] = root.dataset.project; }
    return h;
  }

  function complete(request, answer, signal) {
    return fetch(API + "/chat/completions", {
      method: "POST",
      credentials: "same-origin",
      headers: headers(),
      body: JSON.stringify(request),
      signal: signal
    }).then(function (response) {
      if (!response.ok) {
        return response.text().then(function (text) {
          throw new Error(errorMessage(text, response.status));
        });
      }
      var type = response.headers.get("content-type") || "";
      if (type.indexOf("text/event-stream") < 0 || !response.body) {
        return response.json().then(function (whole) { apply(answer, whole, true); });
      }
      say("Answering…");
      return readEvents(response.body, function (chunk) { apply(answer, chunk, false); });
    });
  }

  // One chunk (or a whole completion) of the OpenAI format into the answer being written.
  function apply(answer, chunk, whole) {
    if (chunk.error) { throw new Error(chunk.error.message || "The stream ended with an error"); }
    var choice = chunk.choices && chunk.choices[0];
    if (choice) {
      var part = whole ? choice.message : choice.delta;
      if (part && typeof part.content === "string") { answer.content += part.content; }
      if (choice.finish_reason) { answer.finish = choice.finish_reason; }
    }
    if (chunk.usage) { answer.usage = chunk.usage; }
    scheduleAnswer();
  }

  // Server-sent events from a fetch body: "data:" lines, events split by a blank line.
  function readEvents(body, onData) {
    var reader = body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var finished = false;
    var take = function (final) {
      var cut = buffer.length;
      if (!final && buffer.charAt(cut - 1) === "\r") { cut -= 1; }  // maybe half of "\r\n"
      var events = buffer.slice(0, cut).replace(/\r\n?/g, "\n").split("\n\n");
      buffer = (final ? "" : events.pop()) + buffer.slice(cut);
      for (var i = 0; i < events.length && !finished; i++) {
        var data = events[i].split("\n")
          .filter(function (line) { return line.lastIndexOf("data:", 0) === 0; })
          .map(function (line) { return line.slice(5).replace(/^ /, ""); })
          .join("\n");
        if (!data) { continue; }
        if (data === "[DONE]") { finished = true; break; }
        onData(JSON.parse(data));
      }
    };
    var pump = function () {
      return reader.read().then(function (result) {
        if (result.done) {
          buffer += decoder.decode();
          take(true);
          return;
        }
        buffer += decoder.decode(result.value, { stream: true });
        take(false);
        if (finished) { return reader.cancel().catch(function () { /* already closed */ }); }
        return pump();
      });
    };
    return pump().catch(function (error) {
      reader.cancel().catch(function () { /* already closed */ });
      throw error;
    });
  }

  function errorMessage(text, status) {
    try {
      var body = JSON.parse(text);
      if (body && body.error && body.error.message) { return body.error.message; }
      if (body && body.detail) { return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); }
    } catch (e) { /* not JSON */ }
    return "The gateway answered HTTP " + status + ".";
  }

  // --- start ----------------------------------------------------------------------------------

  if (current()) { showSettings(current().settings); } else { showSettings(state.prefs); }
  renderAll();
  loadModels();
  if (!markdown) { say("Answers are shown as plain text: the Markdown files of this page are missing."); }
})();
