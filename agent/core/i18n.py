"""Reply texts in zh and en. Pure: `text(lang, key, **values)`."""

from __future__ import annotations

STATUS_EMOJI: dict[str, str] = {
    "pending": "⏳",
    "queued": "⏳",
    "claimed": "⏳",
    "running": "🔄",
    "completed": "✅",
    "failed": "❌",
    "canceled": "⛔",
    "canceling": "⏹️",  # April 2026 on: stopping, the executor has not confirmed yet
}

_EN: dict[str, str] = {
    "help": (
        "*Poco agent commands*\n"
        "/new <task> — start a session and connect this chat\n"
        "/list [n] — recent sessions\n"
        "/connect <id|n> — connect this chat to a session\n"
        "/watch <id> — get a session's notifications\n"
        "/watches — sessions this chat watches\n"
        "/unwatch <id|n> — stop watching\n"
        "/link — link to the connected session\n"
        "/clear — disconnect this chat\n"
        "/answer <request_id> <json> — answer an input request\n"
        "/files [page] — files in the connected session's workspace\n"
        "/get <n|path> — send one of them here\n"
        "Plain text continues the connected session; a photo, file or voice note goes to it "
        "as an attachment (the caption is the prompt)."
    ),
    "menu.help": "Show the commands",
    "menu.list": "Recent sessions",
    "menu.new": "Start a session: /new <task>",
    "menu.connect": "Connect to a session: /connect <id|n>",
    "menu.watch": "Watch a session: /watch <id>",
    "menu.watches": "Sessions this chat watches",
    "menu.unwatch": "Stop watching: /unwatch <id|n>",
    "menu.link": "Link to the connected session",
    "menu.clear": "Disconnect this chat",
    "menu.answer": "Answer an input request",
    "menu.files": "Files in the session's workspace",
    "menu.get": "Send a workspace file: /get <n|path>",
    "unknown_command": "Unknown command /{name}.",
    "empty": "Send /help to see what I can do.",
    "text_only": "I can read text, photos, files and voice notes only.",
    "too_long": "That message is too long ({length} characters; the limit is {limit}).",
    "not_bound": "This chat is not connected to a session. Start one with /new <task> or "
    "connect with /connect <id|n> (see /list).",
    "new_usage": "Usage: /new <task description>",
    "created": "✅ Session created: `{session_id}`\nThis chat is connected to it.\n{link}",
    "continued": "📨 Sent to session `{short_id}`.",
    "queued": "⏳ Queued: runs after the current run ({count} waiting) in session `{short_id}`.",
    "connect_usage": "Usage: /connect <session_id|n> (n is a number from /list)",
    "connected": "🔗 Connected to {title} `{session_id}` ({status}).\n{link}",
    "list_empty": "No sessions yet. Start one with /new <task>.",
    "list_header": "Recent sessions (🔗 connected, 👀 watched):",
    "list_footer": "Connect with /connect <n>.",
    "untitled": "(untitled)",
    "bad_index": "There is no session number {index} in /list.",
    "bad_id": "{value!r} is not a session id or a /list number.",
    "bad_count": "{value!r} is not a number of sessions (1–30).",
    "not_found": "Session `{session_id}` was not found.",
    "forbidden": "Session `{session_id}` belongs to another user.",
    "watch_usage": "Usage: /watch <session_id>",
    "watching": "👀 Watching `{session_id}`: you will get its notifications here.",
    "already_watching": "Already watching `{session_id}`.",
    "watches_empty": "This chat watches no session.",
    "watches_header": "Watched sessions:",
    "unwatch_usage": "Usage: /unwatch <session_id|n> (n is a number from /watches)",
    "unwatched": "Stopped watching `{session_id}`.",
    "not_watching": "This chat does not watch `{session_id}`.",
    "unwatch_bound": "This chat is connected to `{session_id}` and so hears about it; "
    "use /clear to disconnect.",
    "link": "🔗 {link}",
    "cleared": "Disconnected from `{session_id}`. Notifications for it stop too.",
    "nothing_to_clear": "This chat is not connected to a session.",
    "answer_usage": "Usage: /answer <request_id> <json object>, e.g. "
    '/answer 1234… {{"approved":"true"}}',
    "answer_bad_json": "The answer must be a JSON object of strings, e.g. "
    '{{"Which format?":"Bullets"}}.',
    "answer_sent": "✅ Answer sent.",
    "answer_already": "This request was already answered.",
    "answer_expired": "This request has expired.",
    "answer_not_found": "No input request `{request_id}`.",
    "backend_down": "⚠️ The Poco backend cannot be reached right now. Try again in a moment.",
    "backend_refused": "⚠️ Poco refused that: {reason}",
    "backend_unauthorized": "🔒 The Poco backend refuses this agent (HTTP 401). The owner "
    "must set BACKEND_INTERNAL_TOKEN to the backend's INTERNAL_API_TOKEN.",
    "in_doubt": "⚠️ The agent stopped while sending your message «{preview}», and Poco "
    "cannot show whether it arrived (this backend lists only a session's first 1000 "
    "messages). It may not have reached Poco: check with /link and send it again if needed.",
    "pairing": "🔒 This chat is not allowed to use this bot yet.\nPairing code: `{code}`\n"
    "Ask the owner to run: `poco-im-agent pair approve {code}` (valid for 1 hour).",
    "paired": "✅ This chat is now allowed. Send /help to start.",
    "notice.text": "💬 *{title}*\n{text}",
    "notice.completed": "✅ *{title}* completed.\n{link}",
    "notice.failed": "❌ *{title}* failed: {error}\n{link}",
    "notice.canceled": "⛔ *{title}* was canceled.\n{link}",
    "notice.truncated": "⚠️ *{title}* has over 1000 messages, and this Poco backend cannot "
    "list newer ones: follow it in the web UI (or update Poco).\n{link}",
    "notice.question": "❓ *{title}* needs an answer:",
    "notice.plan": "📋 *{title}* proposes a plan:\n\n{plan}",
    "notice.hint_buttons": "Tap a button, or reply to this message with your own answer.",
    "notice.hint_plan_buttons": "Approve or reject with the buttons.",
    "notice.hint_text": "Reply with the option number or its label.",
    "notice.hint_multi_text": "Reply with the option numbers, e.g. 1,3.",
    "notice.hint_plan_text": 'Reply "approve" or "reject".',
    "notice.answered": "✅ Answered: {answer}",
    "notice.answered_elsewhere": "✅ This request was answered.",
    "notice.expired": "⌛ This request expired.",
    "notice.selected": "Selected: {labels}",
    "button.approve": "✅ Approve",
    "button.reject": "❌ Reject",
    "button.submit": "➡️ Submit",
    "answer.approved": "approved",
    "answer.rejected": "rejected",
    "answer.pick_first": "Pick at least one option first.",
    "answer.which": "Several requests here wait for an answer, so «{text}» was not sent. "
    "Answer one with its command (edit the answer as needed):",
    "answer.which_plan": "approve the plan?",
    "late.answered": "This request was already answered {by}: your answer was not used.",
    "late.expired": "This request has expired: your answer was not used.",
    "late.by_here": "in this chat",
    "late.by_web": "in the web UI or elsewhere",
    "late.by_chat": "in the {provider} chat {name}",
    "late.hint_text": "To send it to the session as a message, word it differently.",
    "late.hint_reply": "To send it to the session as a message, send it without replying "
    "to the request.",
    "provider.telegram": "Telegram",
    "provider.dingtalk": "DingTalk",
    "digest.header": "While the agent was away:",
    "digest.line": "{emoji} *{title}* — {status}",
    "digest.last": "Last: {text}",
    "files.default_prompt": "Please take a look at the attached file(s).",
    "files.heard": "🎤 {text}",
    "files.no_transcript": "🎤 This Poco backend cannot transcribe voice notes: the recording "
    "was attached as an audio file.",
    "files.too_big": "📎 {name} is larger than {limit} MB, the most this agent relays. "
    "Nothing was sent.",
    "files.no_storage": "⚠️ The Poco backend cannot store files (it has no object storage). "
    "Nothing was sent: describe it in text instead.",
    "files.backend_too_big": "⚠️ The Poco backend refused the file as too large: {reason}",
    "files.download_failed": "⚠️ The file could not be fetched from the chat ({reason}). "
    "Nothing was sent: try again.",
    "files.kind.photo": "The photo",
    "files.kind.picture": "The picture",
    "files.kind.document": "The document",
    "files.kind.file": "The file",
    "files.kind.voice": "The voice note",
    "files.kind.audio": "The audio file",
    "files.kind.video": "The video",
    "files.kind.video_note": "The video note",
    "files.kind.animation": "The animation",
    "files.changed": "📁 {count} file(s) changed in the workspace: /files",
    "files.none": "No workspace files yet: they are listed once a run has finished and its "
    "workspace was exported.",
    "files.header": "Workspace files ({count}; page {page}/{pages}):",
    "files.more": "More: /files {next}",
    "files.footer": "Send one here with /get and its number, e.g. /get 1.",
    "files.get_usage": "Usage: /get <n|path> (n is a number from /files)",
    "files.bad_number": "There is no file {value} in the last /files.",
    "files.no_such": "No file `{path}` in the workspace (see /files).",
    "files.link": "📎 [{name}]({url}) ({size})",
    "files.too_big_to_send": "This file is over {limit} MB, too large to send here; download "
    "it instead:",
    "files.send_failed": "⚠️ Could not send `{path}`: {reason}",
}

_ZH: dict[str, str] = {
    "help": (
        "*Poco 智能体命令*\n"
        "/new <任务> — 新建会话并连接本聊天\n"
        "/list [n] — 最近的会话\n"
        "/connect <id|n> — 连接到会话\n"
        "/watch <id> — 订阅会话通知\n"
        "/watches — 本聊天订阅的会话\n"
        "/unwatch <id|n> — 取消订阅\n"
        "/link — 当前会话链接\n"
        "/clear — 断开当前会话\n"
        "/answer <request_id> <json> — 回答输入请求\n"
        "/files [页码] — 已连接会话工作区中的文件\n"
        "/get <n|路径> — 把其中一个文件发到这里\n"
        "直接发送文本即可在已连接的会话中继续对话；图片、文件和语音会作为附件发给会话"
        "（说明文字即为提示词）。"
    ),
    "menu.help": "查看命令",
    "menu.list": "最近的会话",
    "menu.new": "新建会话：/new <任务>",
    "menu.connect": "连接会话：/connect <id|n>",
    "menu.watch": "订阅会话：/watch <id>",
    "menu.watches": "本聊天订阅的会话",
    "menu.unwatch": "取消订阅：/unwatch <id|n>",
    "menu.link": "当前会话链接",
    "menu.clear": "断开当前会话",
    "menu.answer": "回答输入请求",
    "menu.files": "会话工作区中的文件",
    "menu.get": "发送工作区文件：/get <n|路径>",
    "unknown_command": "未知命令 /{name}。",
    "empty": "发送 /help 查看可用命令。",
    "text_only": "目前只能处理文字、图片、文件和语音消息。",
    "too_long": "消息太长（{length} 个字符，上限 {limit}）。",
    "not_bound": "本聊天尚未连接会话。请用 /new <任务> 新建，或用 /connect <id|n> 连接"
    "（见 /list）。",
    "new_usage": "用法：/new <任务描述>",
    "created": "✅ 已创建会话：`{session_id}`\n本聊天已连接到该会话。\n{link}",
    "continued": "📨 已发送到会话 `{short_id}`。",
    "queued": "⏳ 已排队：当前运行结束后执行（会话 `{short_id}` 中有 {count} 条在等待）。",
    "connect_usage": "用法：/connect <session_id|n>（n 为 /list 中的序号）",
    "connected": "🔗 已连接到 {title} `{session_id}`（{status}）。\n{link}",
    "list_empty": "还没有会话。用 /new <任务> 新建一个。",
    "list_header": "最近的会话（🔗 已连接，👀 已订阅）：",
    "list_footer": "用 /connect <序号> 连接。",
    "untitled": "（无标题）",
    "bad_index": "/list 中没有第 {index} 个会话。",
    "bad_id": "{value!r} 不是会话 ID，也不是 /list 中的序号。",
    "bad_count": "{value!r} 不是有效的数量（1–30）。",
    "not_found": "找不到会话 `{session_id}`。",
    "forbidden": "会话 `{session_id}` 属于其他用户。",
    "watch_usage": "用法：/watch <session_id>",
    "watching": "👀 已订阅 `{session_id}`，通知会发到这里。",
    "already_watching": "已经订阅了 `{session_id}`。",
    "watches_empty": "本聊天没有订阅任何会话。",
    "watches_header": "已订阅的会话：",
    "unwatch_usage": "用法：/unwatch <session_id|n>（n 为 /watches 中的序号）",
    "unwatched": "已取消订阅 `{session_id}`。",
    "not_watching": "本聊天没有订阅 `{session_id}`。",
    "unwatch_bound": "本聊天已连接到 `{session_id}`，因此会收到它的通知；用 /clear 断开连接。",
    "link": "🔗 {link}",
    "cleared": "已断开会话 `{session_id}`，其通知也已停止。",
    "nothing_to_clear": "本聊天没有连接会话。",
    "answer_usage": "用法：/answer <request_id> <JSON 对象>，例如 "
    '/answer 1234… {{"approved":"true"}}',
    "answer_bad_json": '回答必须是字符串组成的 JSON 对象，例如 {{"Which format?":"Bullets"}}。',
    "answer_sent": "✅ 回答已提交。",
    "answer_already": "该请求已经被回答过了。",
    "answer_expired": "该请求已过期。",
    "answer_not_found": "找不到输入请求 `{request_id}`。",
    "backend_down": "⚠️ 暂时无法连接 Poco 后端，请稍后再试。",
    "backend_refused": "⚠️ Poco 拒绝了该请求：{reason}",
    "backend_unauthorized": "🔒 Poco 后端拒绝了本智能体（HTTP 401）。请管理员把 "
    "BACKEND_INTERNAL_TOKEN 设为后端的 INTERNAL_API_TOKEN。",
    "in_doubt": "⚠️ 发送你的消息「{preview}」时智能体中断了，而 Poco 无法显示它是否已送达"
    "（该后端只列出会话的前 1000 条消息），消息可能没有送达 Poco："
    "请用 /link 查看，如有需要请重新发送。",
    "pairing": "🔒 本聊天尚未获准使用该机器人。\n配对码：`{code}`\n"
    "请让机器人所有者运行：`poco-im-agent pair approve {code}`（1 小时内有效）。",
    "paired": "✅ 本聊天已获准使用。发送 /help 开始。",
    "notice.text": "💬 *{title}*\n{text}",
    "notice.completed": "✅ *{title}* 已完成。\n{link}",
    "notice.failed": "❌ *{title}* 失败：{error}\n{link}",
    "notice.canceled": "⛔ *{title}* 已取消。\n{link}",
    "notice.truncated": "⚠️ *{title}* 已超过 1000 条消息，当前 Poco 后端无法列出更新的消息："
    "请在网页中查看（或升级 Poco）。\n{link}",
    "notice.question": "❓ *{title}* 需要你的回答：",
    "notice.plan": "📋 *{title}* 提出了计划：\n\n{plan}",
    "notice.hint_buttons": "点击按钮，或回复这条消息输入自己的答案。",
    "notice.hint_plan_buttons": "用按钮批准或拒绝。",
    "notice.hint_text": "回复选项序号或选项名称。",
    "notice.hint_multi_text": "回复选项序号，例如 1,3。",
    "notice.hint_plan_text": "回复“批准”或“拒绝”。",
    "notice.answered": "✅ 已回答：{answer}",
    "notice.answered_elsewhere": "✅ 该请求已被回答。",
    "notice.expired": "⌛ 该请求已过期。",
    "notice.selected": "已选：{labels}",
    "button.approve": "✅ 批准",
    "button.reject": "❌ 拒绝",
    "button.submit": "➡️ 提交",
    "answer.approved": "已批准",
    "answer.rejected": "已拒绝",
    "answer.pick_first": "请先选择至少一个选项。",
    "answer.which": "这里有多个请求在等待回答，因此「{text}」没有发送。"
    "请用对应的命令回答其中一个（可按需修改答案）：",
    "answer.which_plan": "是否批准该计划？",
    "late.answered": "该请求已经{by}被回答了：你的回答没有被采用。",
    "late.expired": "该请求已过期：你的回答没有被采用。",
    "late.by_here": "在本聊天中",
    "late.by_web": "在网页端或其他地方",
    "late.by_chat": "在{provider}聊天「{name}」中",
    "late.hint_text": "如需把它作为消息发送给会话，请换一种说法。",
    "late.hint_reply": "如需把它作为消息发送给会话，请直接发送，不要回复该请求。",
    "provider.telegram": "Telegram",
    "provider.dingtalk": "钉钉",
    "digest.header": "智能体离线期间：",
    "digest.line": "{emoji} *{title}* — {status}",
    "digest.last": "最后一条：{text}",
    "files.default_prompt": "请查看附件。",
    "files.heard": "🎤 {text}",
    "files.no_transcript": "🎤 当前 Poco 后端无法转写语音：录音已作为音频文件附上。",
    "files.too_big": "📎 {name}超过 {limit} MB，超出本智能体可转发的上限，未发送。",
    "files.no_storage": "⚠️ Poco 后端无法存储文件（未配置对象存储），未发送：请改用文字描述。",
    "files.backend_too_big": "⚠️ Poco 后端因文件过大拒绝了它：{reason}",
    "files.download_failed": "⚠️ 无法从聊天中获取该文件（{reason}），未发送：请重试。",
    "files.kind.photo": "该图片",
    "files.kind.picture": "该图片",
    "files.kind.document": "该文件",
    "files.kind.file": "该文件",
    "files.kind.voice": "该语音",
    "files.kind.audio": "该音频",
    "files.kind.video": "该视频",
    "files.kind.video_note": "该视频消息",
    "files.kind.animation": "该动图",
    "files.changed": "📁 工作区中有 {count} 个文件被修改：/files",
    "files.none": "工作区中还没有文件：运行结束且工作区导出后才会列出。",
    "files.header": "工作区文件（共 {count} 个；第 {page}/{pages} 页）：",
    "files.more": "更多：/files {next}",
    "files.footer": "用 /get 加序号把文件发到这里，例如 /get 1。",
    "files.get_usage": "用法：/get <n|路径>（n 为 /files 中的序号）",
    "files.bad_number": "上一次 /files 中没有第 {value} 个文件。",
    "files.no_such": "工作区中没有文件 `{path}`（见 /files）。",
    "files.link": "📎 [{name}]({url})（{size}）",
    "files.too_big_to_send": "该文件超过 {limit} MB，无法在这里发送；请下载：",
    "files.send_failed": "⚠️ 无法发送 `{path}`：{reason}",
}

TEXTS: dict[str, dict[str, str]] = {"en": _EN, "zh": _ZH}


def text(lang: str, key: str, **values: object) -> str:
    table = TEXTS.get(lang, _EN)
    return table.get(key, _EN[key]).format(**values)


def session_link(frontend_url: str, lang: str, session_id: str) -> str:
    return f"{frontend_url}/{lang}/chat/{session_id}"
