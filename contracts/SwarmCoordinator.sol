// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/*
 * RL Swarm's on-chain coordinator.
 *
 * External interface: the public SwarmCoordinator 0.4.2 ABI (same functions, argument and
 * return types, events and errors), so one chain client talks to either. Written from scratch
 * for this project; no library code.
 *
 * Shape:
 * - `SwarmCoordinator` is the logic contract (UUPS-upgradeable: `upgradeToAndCall`,
 *   `proxiableUUID`). It is deployed once and used through `SwarmCoordinatorProxy`, an
 *   ERC-1967 proxy whose constructor calls `initialize(owner)`.
 * - Identity: a wallet (EOA) registers one or more libp2p peer IDs; a peer ID belongs to one
 *   wallet forever.
 * - Game clock: round/stage, advanced by a STAGE_MANAGER_ROLE account; 3 stages per round.
 * - Rewards: one int256 per (round, stage, wallet). Scale is chosen off-chain (the Python
 *   client uses points x 1000). Totals are kept per peer ID.
 * - Votes: once per (round, voter peer ID), naming up to MAX_WINNERS_PER_VOTE distinct peers.
 * - Leaderboards (voters by number of votes cast, peers by wins) are kept fully sorted
 *   incrementally: a count only ever grows by one, so each update is O(1) (one swap with the
 *   first member of its equal-count group). Views page the sorted list; no transaction ever
 *   loops over all peers.
 *
 * Refusals use custom errors. Besides the 0.4.2 set, `InvalidPeerId` refuses an empty or
 * over-long peer ID at registration.
 *
 * Round/stage rules for submissions (so a delayed retry of an old round still lands):
 * - roundNumber > currentRound                          -> InvalidRoundNumber
 * - stageNumber >= stageCount()                         -> InvalidStageNumber
 * - roundNumber == currentRound && stageNumber > stage  -> StageOutOfBounds (stage not reached yet)
 */

/// @notice ERC-1967 proxy: storage lives here, code in the implementation it delegates to.
contract SwarmCoordinatorProxy {
    // bytes32(uint256(keccak256("eip1967.proxy.implementation")) - 1)
    bytes32 internal constant IMPLEMENTATION_SLOT = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;

    event Upgraded(address indexed implementation);

    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error FailedCall();

    /// @param implementation the SwarmCoordinator logic contract
    /// @param data calldata run once in the proxy's context, normally `initialize(owner)`
    constructor(address implementation, bytes memory data) payable {
        if (implementation.code.length == 0) revert ERC1967InvalidImplementation(implementation);
        assembly {
            sstore(IMPLEMENTATION_SLOT, implementation)
        }
        emit Upgraded(implementation);
        if (data.length > 0) {
            (bool ok, bytes memory ret) = implementation.delegatecall(data);
            if (!ok) {
                if (ret.length == 0) revert FailedCall();
                assembly {
                    revert(add(ret, 32), mload(ret))
                }
            }
        } else if (msg.value > 0) {
            revert ERC1967NonPayable();
        }
    }

    fallback() external payable {
        assembly {
            let impl := sload(IMPLEMENTATION_SLOT)
            calldatacopy(0, 0, calldatasize())
            let ok := delegatecall(gas(), impl, 0, calldatasize(), 0, 0)
            returndatacopy(0, 0, returndatasize())
            switch ok
            case 0 { revert(0, returndatasize()) }
            default { return(0, returndatasize()) }
        }
    }

    receive() external payable {
        revert ERC1967NonPayable();
    }
}

/// @notice Peer identities, the round/stage clock, rewards, votes and leaderboards of a swarm.
contract SwarmCoordinator {
    // ------------------------------------------------------------------ constants

    string public constant UPGRADE_INTERFACE_VERSION = "5.0.0";
    bytes32 public constant OWNER_ROLE = keccak256("OWNER_ROLE");
    bytes32 public constant STAGE_MANAGER_ROLE = keccak256("STAGE_MANAGER_ROLE");
    bytes32 public constant BOOTNODE_MANAGER_ROLE = keccak256("BOOTNODE_MANAGER_ROLE");

    bytes32 internal constant IMPLEMENTATION_SLOT = 0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc;
    uint256 internal constant STAGE_COUNT = 3;
    // Bounds the loops of submitWinners (duplicate check) to a constant.
    uint256 internal constant MAX_WINNERS_PER_VOTE = 32;
    // libp2p peer IDs are ~52 characters; the cap bounds storage and copies per peer.
    uint256 internal constant MAX_PEER_ID_BYTES = 128;

    // The logic contract's own address: tells proxy calls from direct calls (UUPS).
    address private immutable _self = address(this);

    // ------------------------------------------------------------------ events

    event Initialized(uint64 version);
    event Upgraded(address indexed implementation);
    event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
    event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);
    event PeerRegistered(address indexed eoa, string peerId);
    event StageAdvanced(uint256 indexed roundNumber, uint256 newStage);
    event RoundAdvanced(uint256 indexed newRoundNumber);
    event BootnodesAdded(address indexed manager, uint256 count);
    event BootnodeRemoved(address indexed manager, uint256 index);
    event AllBootnodesCleared(address indexed manager);
    event RewardSubmitted(
        address indexed account, uint256 indexed roundNumber, uint256 indexed stageNumber, int256 reward, string peerId
    );
    event CumulativeRewardsUpdated(address indexed account, string peerId, int256 totalRewards);
    event WinnerSubmitted(address indexed account, string peerId, uint256 indexed roundNumber, string[] winners);

    // ------------------------------------------------------------------ errors

    error OnlyOwner();
    error OnlyStageManager();
    error OnlyBootnodeManager();
    error PeerIdAlreadyRegistered();
    error InvalidPeerId();
    error InvalidRoundNumber();
    error InvalidStageNumber();
    error StageOutOfBounds();
    error RewardAlreadySubmitted();
    error WinnerAlreadyVoted();
    error InvalidVote();
    error InvalidVoterPeerId();
    error InvalidBootnodeIndex();
    error InvalidInitialization();
    error NotInitializing();
    error UUPSUnauthorizedCallContext();
    error UUPSUnsupportedProxiableUUID(bytes32 slot);
    error ERC1967InvalidImplementation(address implementation);
    error ERC1967NonPayable();
    error AddressEmptyCode(address target);
    error FailedCall();

    // ------------------------------------------------------------------ storage
    // Append-only across upgrades: new variables go at the end.

    /// A list kept sorted by count (descending). Counts only grow by one at a time, and
    /// members with equal counts sit in one contiguous group, so moving a member up one
    /// count is a swap with the first member of its group.
    struct Ranking {
        bytes32[] order;
        mapping(bytes32 => uint256) positionPlusOne; // 0 = not ranked yet
        mapping(bytes32 => uint256) count;
        mapping(uint256 => uint256) groupStart; // count -> first position holding that count
        mapping(uint256 => uint256) groupSize; // count -> members holding that count
    }

    uint64 private _initializedVersion;
    bool private _initializing;
    uint256 private _currentRound;
    uint256 private _currentStage;
    mapping(bytes32 => mapping(address => bool)) private _roles;

    mapping(address => string[]) private _eoaPeerIds;
    mapping(bytes32 => address) private _peerEoa; // keccak(peerId) -> owner wallet
    mapping(bytes32 => string) private _peerName; // keccak(peerId) -> peerId, for leaderboards

    // clearBootnodes starts a fresh list instead of deleting each entry (O(1)).
    uint256 private _bootnodeGeneration;
    mapping(uint256 => string[]) private _bootnodes;

    mapping(uint256 => mapping(uint256 => mapping(address => bool))) private _rewardSubmitted;
    mapping(uint256 => mapping(uint256 => mapping(address => int256))) private _roundStageReward;
    mapping(bytes32 => int256) private _totalRewards;

    mapping(uint256 => mapping(bytes32 => string[])) private _votes; // round -> voter -> winners (never empty once cast)
    mapping(uint256 => mapping(bytes32 => uint256)) private _roundPeerVotes; // round -> peer -> votes received

    Ranking private _voters; // voter peer -> rounds voted in
    Ranking private _winners; // peer -> votes received over all rounds

    // ------------------------------------------------------------------ set-up and roles

    /// The logic contract itself can never be initialized; only proxies pointing at it.
    constructor() {
        _initializedVersion = type(uint64).max;
        emit Initialized(type(uint64).max);
    }

    /// @notice One-time set-up through the proxy: `owner_` gets every role.
    function initialize(address owner_) external {
        if (_initializedVersion != 0 || _initializing) revert InvalidInitialization();
        _initializedVersion = 1;
        _initializing = true;
        _initRoles(owner_);
        _initializing = false;
        emit Initialized(1);
    }

    function _initRoles(address owner_) private {
        if (!_initializing) revert NotInitializing();
        _grantRole(OWNER_ROLE, owner_);
        _grantRole(STAGE_MANAGER_ROLE, owner_);
        _grantRole(BOOTNODE_MANAGER_ROLE, owner_);
    }

    modifier onlyOwner() {
        if (!_roles[OWNER_ROLE][msg.sender]) revert OnlyOwner();
        _;
    }

    modifier onlyStageManager() {
        if (!_roles[STAGE_MANAGER_ROLE][msg.sender]) revert OnlyStageManager();
        _;
    }

    modifier onlyBootnodeManager() {
        if (!_roles[BOOTNODE_MANAGER_ROLE][msg.sender]) revert OnlyBootnodeManager();
        _;
    }

    function hasRole(bytes32 role, address account) external view returns (bool) {
        return _roles[role][account];
    }

    function grantRole(bytes32 role, address account) external onlyOwner {
        _grantRole(role, account);
    }

    function revokeRole(bytes32 role, address account) external onlyOwner {
        if (_roles[role][account]) {
            _roles[role][account] = false;
            emit RoleRevoked(role, account, msg.sender);
        }
    }

    function _grantRole(bytes32 role, address account) private {
        if (!_roles[role][account]) {
            _roles[role][account] = true;
            emit RoleGranted(role, account, msg.sender);
        }
    }

    // ------------------------------------------------------------------ upgrades (UUPS)

    /// @notice ERC-1822 slot; only answers on the logic contract itself, never through a proxy.
    function proxiableUUID() external view returns (bytes32) {
        if (address(this) != _self) revert UUPSUnauthorizedCallContext();
        return IMPLEMENTATION_SLOT;
    }

    /// @notice Point the proxy at new logic (owner only) and optionally run `data` on it.
    function upgradeToAndCall(address newImplementation, bytes calldata data) external payable {
        // Context first: on the logic contract itself (no roles there) the answer is "wrong context".
        if (address(this) == _self || _implementation() != _self) revert UUPSUnauthorizedCallContext();
        if (!_roles[OWNER_ROLE][msg.sender]) revert OnlyOwner();
        (bool ok, bytes memory ret) = newImplementation.staticcall(abi.encodeCall(this.proxiableUUID, ()));
        if (!ok || ret.length != 32) revert ERC1967InvalidImplementation(newImplementation);
        bytes32 slot = abi.decode(ret, (bytes32));
        if (slot != IMPLEMENTATION_SLOT) revert UUPSUnsupportedProxiableUUID(slot);
        assembly {
            sstore(IMPLEMENTATION_SLOT, newImplementation)
        }
        emit Upgraded(newImplementation);
        if (data.length > 0) {
            _delegate(newImplementation, data);
        } else if (msg.value > 0) {
            revert ERC1967NonPayable();
        }
    }

    function _implementation() private view returns (address impl) {
        assembly {
            impl := sload(IMPLEMENTATION_SLOT)
        }
    }

    function _delegate(address target, bytes calldata data) private {
        (bool ok, bytes memory ret) = target.delegatecall(data);
        if (!ok) {
            if (ret.length == 0) revert FailedCall();
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        if (ret.length == 0 && target.code.length == 0) revert AddressEmptyCode(target);
    }

    // ------------------------------------------------------------------ peers

    /// @notice Bind `peerId` to the caller's wallet; a peer ID can be registered once.
    function registerPeer(string calldata peerId) external {
        uint256 len = bytes(peerId).length;
        if (len == 0 || len > MAX_PEER_ID_BYTES) revert InvalidPeerId();
        bytes32 key = keccak256(bytes(peerId));
        if (_peerEoa[key] != address(0)) revert PeerIdAlreadyRegistered();
        _peerEoa[key] = msg.sender;
        _peerName[key] = peerId;
        _eoaPeerIds[msg.sender].push(peerId);
        emit PeerRegistered(msg.sender, peerId);
    }

    function getPeerId(address[] calldata eoas) external view returns (string[][] memory peerIds) {
        peerIds = new string[][](eoas.length);
        for (uint256 i = 0; i < eoas.length; i++) {
            peerIds[i] = _eoaPeerIds[eoas[i]];
        }
    }

    function getEoa(string[] calldata peerIds) external view returns (address[] memory eoas) {
        eoas = new address[](peerIds.length);
        for (uint256 i = 0; i < peerIds.length; i++) {
            eoas[i] = _peerEoa[keccak256(bytes(peerIds[i]))];
        }
    }

    // ------------------------------------------------------------------ round and stage

    function currentRound() external view returns (uint256) {
        return _currentRound;
    }

    function currentStage() external view returns (uint256) {
        return _currentStage;
    }

    function stageCount() external pure returns (uint256) {
        return STAGE_COUNT;
    }

    /// @notice Next stage; after the last stage, stage 0 of the next round.
    function updateStageAndRound() external onlyStageManager returns (uint256, uint256) {
        uint256 stage = _currentStage + 1;
        if (stage >= STAGE_COUNT) {
            _currentRound += 1;
            _currentStage = 0;
            emit RoundAdvanced(_currentRound);
        } else {
            _currentStage = stage;
        }
        emit StageAdvanced(_currentRound, _currentStage);
        return (_currentRound, _currentStage);
    }

    // ------------------------------------------------------------------ bootnodes

    function addBootnodes(string[] calldata newBootnodes) external onlyBootnodeManager {
        string[] storage list = _bootnodes[_bootnodeGeneration];
        for (uint256 i = 0; i < newBootnodes.length; i++) {
            list.push(newBootnodes[i]);
        }
        emit BootnodesAdded(msg.sender, newBootnodes.length);
    }

    /// @notice Remove one bootnode; the last entry takes its place (order is not kept).
    function removeBootnode(uint256 index) external onlyBootnodeManager {
        string[] storage list = _bootnodes[_bootnodeGeneration];
        uint256 last = list.length;
        if (index >= last) revert InvalidBootnodeIndex();
        last -= 1;
        if (index != last) {
            list[index] = list[last];
        }
        list.pop();
        emit BootnodeRemoved(msg.sender, index);
    }

    function clearBootnodes() external onlyBootnodeManager {
        _bootnodeGeneration += 1;
        emit AllBootnodesCleared(msg.sender);
    }

    function getBootnodes() external view returns (string[] memory) {
        return _bootnodes[_bootnodeGeneration];
    }

    function getBootnodesCount() external view returns (uint256) {
        return _bootnodes[_bootnodeGeneration].length;
    }

    // ------------------------------------------------------------------ rewards

    /// @notice Record the caller's reward for one stage of a round (once per wallet), credited
    ///         to `peerId`, which must be registered to the caller.
    function submitReward(uint256 roundNumber, uint256 stageNumber, int256 reward, string calldata peerId) external {
        _checkRoundStage(roundNumber, stageNumber);
        bytes32 key = _ownedPeer(peerId);
        if (_rewardSubmitted[roundNumber][stageNumber][msg.sender]) revert RewardAlreadySubmitted();
        _rewardSubmitted[roundNumber][stageNumber][msg.sender] = true;
        _roundStageReward[roundNumber][stageNumber][msg.sender] = reward;
        int256 total = _totalRewards[key] + reward;
        _totalRewards[key] = total;
        emit RewardSubmitted(msg.sender, roundNumber, stageNumber, reward, peerId);
        emit CumulativeRewardsUpdated(msg.sender, peerId, total);
    }

    function hasSubmittedRoundStageReward(uint256 roundNumber, uint256 stageNumber, address account)
        external
        view
        returns (bool)
    {
        return _rewardSubmitted[roundNumber][stageNumber][account];
    }

    function getRoundStageReward(uint256 roundNumber, uint256 stageNumber, address[] calldata accounts)
        external
        view
        returns (int256[] memory rewards)
    {
        rewards = new int256[](accounts.length);
        for (uint256 i = 0; i < accounts.length; i++) {
            rewards[i] = _roundStageReward[roundNumber][stageNumber][accounts[i]];
        }
    }

    function getTotalRewards(string[] calldata peerIds) external view returns (int256[] memory totals) {
        totals = new int256[](peerIds.length);
        for (uint256 i = 0; i < peerIds.length; i++) {
            totals[i] = _totalRewards[keccak256(bytes(peerIds[i]))];
        }
    }

    // ------------------------------------------------------------------ votes

    /// @notice The voter `peerId` (registered to the caller) names the round's winners, once
    ///         per round: 1..MAX_WINNERS_PER_VOTE distinct, non-empty peer IDs.
    function submitWinners(uint256 roundNumber, string[] calldata winners, string calldata peerId) external {
        if (roundNumber > _currentRound) revert InvalidRoundNumber();
        bytes32 voter = _ownedPeer(peerId);
        string[] storage stored = _votes[roundNumber][voter];
        if (stored.length != 0) revert WinnerAlreadyVoted();
        uint256 n = winners.length;
        if (n == 0 || n > MAX_WINNERS_PER_VOTE) revert InvalidVote();
        bytes32[] memory keys = new bytes32[](n);
        for (uint256 i = 0; i < n; i++) {
            uint256 len = bytes(winners[i]).length;
            if (len == 0 || len > MAX_PEER_ID_BYTES) revert InvalidVote();
            bytes32 k = keccak256(bytes(winners[i]));
            for (uint256 j = 0; j < i; j++) {
                if (keys[j] == k) revert InvalidVote();
            }
            keys[i] = k;
        }
        for (uint256 i = 0; i < n; i++) {
            stored.push(winners[i]);
            _roundPeerVotes[roundNumber][keys[i]] += 1;
            if (bytes(_peerName[keys[i]]).length == 0) _peerName[keys[i]] = winners[i];
            _bump(_winners, keys[i]);
        }
        _bump(_voters, voter);
        emit WinnerSubmitted(msg.sender, peerId, roundNumber, winners);
    }

    function getVoterVotes(uint256 roundNumber, string calldata peerId) external view returns (string[] memory) {
        return _votes[roundNumber][keccak256(bytes(peerId))];
    }

    function getVoterVoteCount(string calldata peerId) external view returns (uint256) {
        return _voters.count[keccak256(bytes(peerId))];
    }

    function getPeerVoteCount(uint256 roundNumber, string calldata peerId) external view returns (uint256) {
        return _roundPeerVotes[roundNumber][keccak256(bytes(peerId))];
    }

    function getTotalWins(string calldata peerId) external view returns (uint256) {
        return _winners.count[keccak256(bytes(peerId))];
    }

    function uniqueVoters() external view returns (uint256) {
        return _voters.order.length;
    }

    function uniqueVotedPeers() external view returns (uint256) {
        return _winners.order.length;
    }

    /// @notice Voters by rounds voted in, most first; positions [start, end), end clamped.
    function voterLeaderboard(uint256 start, uint256 end)
        external
        view
        returns (string[] memory peerIds, uint256[] memory voteCounts)
    {
        return _page(_voters, start, end);
    }

    /// @notice Peers by votes received over all rounds, most first; positions [start, end), end clamped.
    function winnerLeaderboard(uint256 start, uint256 end)
        external
        view
        returns (string[] memory peerIds, uint256[] memory wins)
    {
        return _page(_winners, start, end);
    }

    // ------------------------------------------------------------------ internals

    function _checkRoundStage(uint256 roundNumber, uint256 stageNumber) private view {
        if (roundNumber > _currentRound) revert InvalidRoundNumber();
        if (stageNumber >= STAGE_COUNT) revert InvalidStageNumber();
        if (roundNumber == _currentRound && stageNumber > _currentStage) revert StageOutOfBounds();
    }

    /// The peer ID's key, if the caller's wallet registered it.
    function _ownedPeer(string calldata peerId) private view returns (bytes32 key) {
        key = keccak256(bytes(peerId));
        if (_peerEoa[key] != msg.sender) revert InvalidVoterPeerId();
    }

    /// Add one to `key`'s count, keeping `r.order` sorted (O(1)).
    function _bump(Ranking storage r, bytes32 key) private {
        uint256 posPlusOne = r.positionPlusOne[key];
        uint256 pos;
        uint256 c;
        if (posPlusOne == 0) {
            // New members enter at the end with count 0 (the lowest group).
            r.order.push(key);
            pos = r.order.length - 1;
            r.positionPlusOne[key] = pos + 1;
            if (r.groupSize[0] == 0) r.groupStart[0] = pos;
            r.groupSize[0] += 1;
        } else {
            pos = posPlusOne - 1;
            c = r.count[key];
        }
        uint256 first = r.groupStart[c];
        if (first != pos) {
            bytes32 other = r.order[first];
            r.order[first] = key;
            r.order[pos] = other;
            r.positionPlusOne[key] = first + 1;
            r.positionPlusOne[other] = pos + 1;
        }
        r.groupSize[c] -= 1;
        if (r.groupSize[c] != 0) r.groupStart[c] = first + 1;
        uint256 next = c + 1;
        r.count[key] = next;
        if (r.groupSize[next] == 0) r.groupStart[next] = first;
        r.groupSize[next] += 1;
    }

    function _page(Ranking storage r, uint256 start, uint256 end)
        private
        view
        returns (string[] memory ids, uint256[] memory counts)
    {
        uint256 n = r.order.length;
        if (end > n) end = n;
        if (start >= end) return (new string[](0), new uint256[](0));
        uint256 size = end - start;
        ids = new string[](size);
        counts = new uint256[](size);
        for (uint256 i = 0; i < size; i++) {
            bytes32 key = r.order[start + i];
            ids[i] = _peerName[key];
            counts[i] = r.count[key];
        }
    }
}
